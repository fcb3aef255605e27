"""`fcnseg train` as a user runs it: short runs from the CLI, Ctrl-C, --resume, quiet logs.

Each test runs the command a user would type, in a subprocess (``python -m fcnseg.cli``), so
what is checked is what reaches a terminal or a log file: no carriage-return progress lines when
stderr is not a terminal (and bars when it is), no library warnings, and after SIGINT one report
of what the run left and the exact command that continues it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shlex
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("skimage")

from fcnseg.quantize.train import deferred_interrupt  # noqa: E402
from tests.helpers.train_configs import tiny_train_config  # noqa: E402

#: a net and data small enough for a few seconds per run (8 scenes of 64x64, batch 4)
TINY = tiny_train_config(val_length=2, epochs=50, float_epochs=50, calibration_batches=1)


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no warning options of the test runner."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "COLUMNS")}


def fcnseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "fcnseg.cli", *args]


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_run_from_the_cli_alone(config, tmp_path):
    """--float-epochs/--epochs/--steps-per-epoch/--val-images: no config editing for a short run."""
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "-o", str(run), "--float-epochs", "2"]
    args += ["--epochs", "1", "--steps-per-epoch", "1", "--val-images", "1"]
    done = subprocess.run(fcnseg(*args), capture_output=True, text=True, env=user_env())
    assert done.returncode == 0, done.stderr
    floats = _records(run / "float" / "metrics.jsonl")
    assert [(r["epoch"], r["step"]) for r in floats] == [(1, 1), (2, 2)]
    assert [(r["epoch"], r["step"]) for r in _records(run / "metrics.jsonl")] == [(1, 1)]
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps_per_epoch"] == 1 and saved["val_images"] == 1
    assert json.loads((run / "float" / "config.json").read_text())["epochs"] == 2
    # not a terminal: no progress bars, no library warnings; the epoch lines are kept in a log
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "Warning" not in done.stderr, done.stderr
    log = (run / "train.log").read_text()
    assert "[float] epoch 2/2 step 2" in log and "[qat] epoch 1/1 step 1" in log
    assert "qat: best val mean IU" in done.stdout


def test_progress_bars_show_on_a_terminal(config, tmp_path):
    """The control of the test above: with stderr on a pseudo-terminal the bars are drawn."""
    controller, terminal = pty.openpty()
    # a terminal of 24 x 100 characters (a fresh pty is 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = ["train", "--config", str(config), "-o", str(tmp_path / "run"), "--float-epochs", "0"]
    args += ["--epochs", "1", "--steps-per-epoch", "2", "--val-images", "1"]
    process = subprocess.Popen(
        fcnseg(*args), stdout=subprocess.DEVNULL, stderr=terminal, env=user_env()
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0, seen.decode(errors="replace")
    assert b"\r" in seen and b"qat 1/1" in seen


def test_interrupt_reports_what_exists_and_the_resume_command(config, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "-o", str(run), "--float-epochs", "2"]
    args += ["--epochs", "6", "--steps-per-epoch", "1", "--val-images", "1", "--no-progress"]
    process = subprocess.Popen(
        fcnseg(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env()
    )
    for line in process.stdout:
        if line.startswith("[qat] epoch 1/6"):
            process.send_signal(signal.SIGINT)  # Ctrl-C in the QAT phase
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert f"training interrupted; {run} holds:" in stderr
    assert f"float: 2 of 2 epochs (done); last {run / 'float' / 'last.safetensors'}; " in stderr
    assert f"best {run / 'float' / 'best.safetensors'}" in stderr
    assert "qat: " in stderr and "of 6 epochs (interrupted)" in stderr
    (command,) = [line for line in stderr.splitlines() if line.startswith("go on with: ")]
    words = shlex.split(command.removeprefix("go on with: "))
    assert words[:2] == ["fcnseg", "train"] and words[-1] == "--resume"
    for option in ("--float-epochs", "2", "--epochs", "6", "--steps-per-epoch", "--no-progress"):
        assert option in words

    # the printed command, as typed, finishes the run: every epoch exactly once
    resumed = subprocess.run(fcnseg(*words[1:]), capture_output=True, text=True, env=user_env())
    assert resumed.returncode == 0, resumed.stderr
    assert "[qat] resuming" in resumed.stdout
    assert [r["epoch"] for r in _records(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in _records(run / "float" / "metrics.jsonl")] == [1, 2]
    assert json.loads((run / "last.json").read_text())["epoch"] == 6


def test_interrupt_before_any_epoch_says_so(config, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "-o", str(run), "--steps-per-epoch", "1"]
    process = subprocess.Popen(
        fcnseg(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env()
    )
    for line in process.stdout:
        if line.startswith("[float] epoch 1/50"):
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "float: " in stderr and "of 50 epochs (interrupted)" in stderr
    assert "qat: no epoch finished yet" in stderr


def test_sigint_is_held_back_until_the_epoch_is_written():
    handler = signal.getsignal(signal.SIGINT)
    written = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            written.append("checkpoint")  # still runs: the signal waits for the block's end
            written.append("optimizer")
    assert written == ["checkpoint", "optimizer"]
    with deferred_interrupt():  # no signal, no exception; the handler is restored afterwards
        pass
    assert signal.getsignal(signal.SIGINT) is handler
