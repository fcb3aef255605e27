"""Quiet by default: no build warnings from our pyproject, no library noise from our commands.

- ``pip wheel --no-deps`` of the source tree prints no setuptools deprecation and no
  "Package would be ignored" (the SPDX license string, package data declared explicitly).
- ``fcnseg export`` prints its result and wall time, and no Warning lines.
- :func:`~fcnseg.quantize.console.quiet_warnings` drops only the listed noise (into the log where
  there is one), lets every other warning through, and steps aside for an explicit ``-W``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from fcnseg.quantize.console import is_noise, progress_wanted, quiet_warnings

ROOT = Path(__file__).resolve().parents[2]
NOISY = ("deprecat", "would be ignored", "warning")


def _setuptools_at_least(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


def _copy_tracked_tree(target: Path) -> None:
    """The files git tracks (the wheel's sources), without build leftovers of this checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.skipif(
    not _setuptools_at_least(77), reason="builds offline with this env's setuptools (needs >= 77)"
)
@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_pip_wheel_is_quiet_and_carries_the_shipped_packages(tmp_path):
    source = tmp_path / "src"
    _copy_tracked_tree(source)
    # offline: this env's setuptools, no index (nothing downloads at test time)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "-w", str(tmp_path / "dist"), str(source)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for word in NOISY:
        assert word not in done.stderr.lower(), done.stderr
    (wheel,) = (tmp_path / "dist").glob("fcnseg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: BSD-3-Clause" in archive.read(metadata).decode()
    for board in ("pynq-z2", "zcu104"):
        for file in ("accelerator.json", "accelerator.npz", "hw_graph.onnx"):
            assert f"fcnseg/host/packages/fcn8s-{board}/{file}" in names


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("brevitas") is None,
    reason="export needs the train extra",
)
def test_export_prints_its_wall_time_and_no_warnings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    checkpoint = ROOT / "models" / "default-fcn8s" / "checkpoint.safetensors"
    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "export", str(checkpoint), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr, done.stderr
    assert "wall time" in done.stdout and (out / "model.onnx").is_file()


def test_noise_goes_to_the_log_and_the_rest_through(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])
    log = tmp_path / "run" / "train.log"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_warnings(log):
            warnings.warn(
                "ONNX opset version set to 13, override with opset_version=", stacklevel=2
            )
            warnings.warn(
                "fast_hadamard_transform package not found, using standard kernels", stacklevel=2
            )
            warnings.warn("your learning rate is negative", UserWarning, stacklevel=2)
    assert [str(w.message) for w in seen] == ["your learning rate is negative"]
    text = log.read_text()
    assert "ONNX opset version set to 13" in text and "fast_hadamard_transform" in text
    assert "learning rate" not in text


def test_no_log_file_without_noise_and_user_options_win(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])
    with quiet_warnings(tmp_path / "train.log"):
        pass
    assert not (tmp_path / "train.log").exists()
    monkeypatch.setattr(sys, "warnoptions", ["always"])  # python -W always: show everything
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_warnings(tmp_path / "train.log"):
            warnings.warn(
                "ONNX opset version set to 13, override with opset_version=", stacklevel=2
            )
    assert len(seen) == 1


def test_noise_list_and_progress_rule(monkeypatch):
    assert is_noise("ONNX opset version set to 17, override", UserWarning)
    assert not is_noise("ONNX opset version set to 17, override", DeprecationWarning)
    assert not is_noise("a real problem", UserWarning)

    class Pipe:
        def isatty(self) -> bool:
            return False

    class Terminal(Pipe):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Pipe())
    assert not progress_wanted(True)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_wanted(True) and not progress_wanted(False)
