"""The distribution's shape: three stages in three folders, one console script, light imports."""

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
}

# Modules that must never be imported by the host runtime: a PYNQ image (Pynq-Z2, 32-bit ARM) has
# none of them.
HEAVY = ("torch", "brevitas", "onnx", "onnxruntime", "qonnx", "finn", "pynq", "finn_plus_driver")


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


@pytest.mark.parametrize("module", ["fcnseg", "fcnseg.cli", "fcnseg.host", "fcnseg.quantize"])
def test_light_modules_import_nothing_heavy(module: str) -> None:
    """Run in a fresh interpreter so other tests' imports don't hide a heavy import."""
    code = (
        f"import sys, {module}\n"
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
