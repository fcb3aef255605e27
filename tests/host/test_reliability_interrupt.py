"""Issue 9, item 2: an interrupted batch loses nothing.

A real ``python -m fcnseg.cli segment`` subprocess over 30 images is stopped mid-way with SIGINT
(exit 130, one line, no traceback) and with SIGKILL (no chance to clean up). Every mask that
exists afterwards is complete (decodes, right size, equal to a clean run's), no temporary file
masquerades as an output, and re-running the same command skips the finished masks, removes
what the killed run left behind and completes the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import image
from tests.helpers.packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 30


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(package, input folder, reference masks from an uninterrupted in-process run)."""
    from fcnseg.host.segmenter import Segmenter

    root = tmp_path_factory.mktemp("batch")
    package = tiny_package(root / "tiny-pynq-z2")
    inputs = root / "in"
    inputs.mkdir()
    seg = Segmenter.load(package)
    reference = {}
    for i in range(N_IMAGES):
        rgb = image(120 + 4 * i, 160, seed=i)
        Image.fromarray(rgb).save(inputs / f"img{i:02d}.png")
        reference[f"img{i:02d}"] = seg(rgb)
    return package, inputs, reference


def _default_sigint() -> None:
    """In the child, before exec: SIGINT back to its default action, so that Python installs
    its KeyboardInterrupt handler as it does under a terminal. A test run started in the
    background by a non-interactive shell (``cmd &``) ignores SIGINT; the child inherited that
    and ran its batch to the end ("assert 30 < 30")."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(package: Path, inputs: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fcnseg.cli", "segment", str(inputs), "-o", str(out)]
    cmd += ["--package", str(package)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=_default_sigint,
    )


def _wait_for_masks(out: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the batch ended before it could be interrupted: {proc.communicate()}")
        if out.is_dir() and len(list(out.glob("img*.png"))) >= n:
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no masks appeared")


def _check_complete(out: Path, reference: dict[str, np.ndarray]) -> int:
    """Every visible output is a complete, correct mask; returns how many there are
    (``classes.json``, written before any mask, is not one)."""
    visible = sorted(
        p for p in out.iterdir() if not p.name.startswith(".") and p.name != "classes.json"
    )
    for path in visible:
        assert path.suffix == ".png" and path.stem in reference, path
        with Image.open(path) as mask:
            labels = np.asarray(mask)
        np.testing.assert_array_equal(labels, reference[path.stem], err_msg=path.name)
    return len(visible)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_batch_loses_nothing(batch, tmp_path: Path, sig: signal.Signals) -> None:
    package, inputs, reference = batch
    out = tmp_path / "out"
    proc = _start(package, inputs, out)
    _wait_for_masks(out, proc, 3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    done = _check_complete(out, reference)
    assert 3 <= done < N_IMAGES, "the batch was not interrupted mid-way"
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("fcnseg: interrupted"), stderr
        assert not list(out.glob(".*.tmp")), "SIGINT must clean up temporary files"
    else:
        assert proc.returncode == -signal.SIGKILL
    # the re-run skips what is finished and completes the rest
    again = _start(package, inputs, out)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert f"segmented {N_IMAGES - done} image(s)" in stdout and f"skipped {done}" in stdout
    assert _check_complete(out, reference) == N_IMAGES
    assert not list(out.glob(".*")), "leftover temporary files"
