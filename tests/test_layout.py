"""The distribution's shape: three stages, the benchmarks and the testing aids in their own
folders, a base package of errors + atomic writes + the console script, light board imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "fcnseg": "fcnseg",
    "fcnseg.quantize": "quantize",
    "fcnseg.hw": "hw",
    "fcnseg.host": "host",
    "fcnseg.benchmarks": "benchmarks",
    "fcnseg.testing": "testing",
}
#: the base package: the ground floor (errors, atomic writes, the configs' strict JSON round-trip,
#: all standard library) and the CLI entry point, nothing else.
BASE_MODULES = {"__init__.py", "errors.py", "atomic.py", "config.py", "cli.py"}

# Modules that must never be imported by the host runtime: a PYNQ image (Pynq-Z2, 32-bit ARM) has
# none of them (pynq and finn-plus-driver are imported by the pynq backend once it is chosen).
HEAVY = (
    "torch",
    "brevitas",
    "onnx",
    "onnxruntime",
    "qonnx",
    "finn",
    "finn_plus_driver",
    "pynq",
    "scipy",
    "skimage",
)
#: what runs on a board, each checked on its own: the runtime's modules named by issue 12 and
#: every other module under host/ (found on disk, so a new one is covered without listing it).
BOARD_MODULES = (
    "fcnseg",
    "fcnseg.cli",
    "fcnseg.errors",
    "fcnseg.atomic",
    "fcnseg.host",
    "fcnseg.host.segmenter",
    "fcnseg.host.cli",
    "fcnseg.host.backends",
    "fcnseg.host.backends.sim",
    "fcnseg.host.backends.pynq",
    "fcnseg.host.sim",
    "fcnseg.host.pipeline",
    "fcnseg.host.images",
    "fcnseg.host.package",
)


def host_modules() -> list[str]:
    """Every module under host/ as ``fcnseg.host.*`` (packages by their ``__init__``)."""
    names = []
    for path in sorted((ROOT / "host").rglob("*.py")):
        parts = list(path.relative_to(ROOT / "host").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(["fcnseg.host", *parts]))
    return names


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the board env runs 3.10 like PYNQ
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_for_non_editable_installs() -> None:
    """setuptools' package-dir mapping needs every sub-package listed, or a wheel misses it."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for import_name, folder in STAGES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([import_name, *relative.parts]))
    assert found == listed


def test_package_dir_maps_stages_to_top_level_folders() -> None:
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == STAGES


def test_base_package_holds_only_the_ground_floor_and_the_cli() -> None:
    """Benchmarks, testing aids and stages live in their own folders, not in fcnseg/."""
    entries = {p.name for p in (ROOT / "fcnseg").iterdir() if p.name != "__pycache__"}
    assert entries == BASE_MODULES


def test_board_module_list_covers_the_runtime() -> None:
    """The issue's list is part of what is checked, and every host/ module exists on disk."""
    found = set(host_modules())
    assert {m for m in BOARD_MODULES if m.startswith("fcnseg.host")} <= found
    assert (
        "fcnseg.host.backends.emulated_zynq" not in found and "fcnseg.host.sim.bench" not in found
    )


@pytest.mark.parametrize(
    "module", sorted({*BOARD_MODULES, *host_modules(), "fcnseg.quantize", "fcnseg.benchmarks"})
)
def test_light_modules_import_nothing_heavy(module: str) -> None:
    """Run in a fresh interpreter so other tests' imports don't hide a heavy import."""
    code = (
        f"import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""


def test_cli_lists_every_stage_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "export", "eval", "compile", "info", "segment", "bench"):
        assert f"  {command}" in result.stdout


def test_cli_user_error_is_one_line_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "segment", "/nonexistent/image.png", "-o", "/tmp/x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_wheel_carries_every_subpackage_and_the_default_packages(tmp_path: Path) -> None:
    """A non-editable install (how a board gets fcnseg) has the code and the shipped packages."""
    pytest.importorskip("setuptools", minversion="68")
    pytest.importorskip("wheel")
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fcnseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in _pyproject()["tool"]["setuptools"]["packages"]:
        assert package.replace(".", "/") + "/__init__.py" in names
    for board in ("pynq-z2", "zcu104"):
        for file in ("accelerator.json", "accelerator.npz", "hw_graph.onnx"):
            assert f"fcnseg/host/packages/fcn8s-{board}/{file}" in names
