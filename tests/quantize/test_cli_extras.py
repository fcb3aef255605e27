"""`fcnseg train/export/eval` on a host-only install: one line naming the extra, no traceback.

The board environment has no torch, so there the commands run as they are. In the training
environment torch is hidden from a child interpreter (``sys.modules["torch"] = None`` makes every
``import torch`` fail as on an install without it), so the check runs in both.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg import cli

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "default-fcn8s" / "checkpoint.safetensors"

#: run fcnseg's entry point with torch unimportable (a no-op where torch is absent anyway)
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; from fcnseg.cli import main; "


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    code = WITHOUT_TORCH + f"sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--config", str(ROOT / "quantize/configs/default-fcn8s.json"), "-o", "run"),
        ("export", str(CHECKPOINT), "-o", "export"),
        ("eval", "--checkpoint", str(CHECKPOINT), "--data", "voc:/nonexistent", "--split", "x"),
    ],
    ids=["train", "export", "eval-checkpoint"],
)
def test_host_only_install_names_the_extra(args, tmp_path):
    done = run_without_torch(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"fcnseg: error: `fcnseg {args[0]}` needs torch")
    assert "pip install 'fcnseg[train]'" in line and "torch==2.13.0" in line


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="the board env's truth")
def test_board_env_as_it_is():
    """In .venv-board torch is really absent: the plain console script says the same."""
    done = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "export", str(CHECKPOINT), "-o", "x"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "pip install 'fcnseg[train]'" in done.stderr
    assert "Traceback" not in done.stderr


def _missing(name: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_the_extra_follows_the_command_and_the_module():
    assert "fcnseg[train]" in cli.missing_extra_message("train", _missing("brevitas.nn"))
    assert "fcnseg[compile]" in cli.missing_extra_message("compile", _missing("qonnx.core"))
    assert "fcnseg[train]" in cli.missing_extra_message("export", _missing("qonnx"))
    assert "finn-plus==1.6.1" in cli.missing_extra_message("compile", _missing("finn"))
    assert "scikit-image" in cli.missing_extra_message("eval", _missing("skimage"))
    # fcnseg's own modules and modules no extra provides are not disguised as a missing extra
    assert cli.missing_extra_message("train", _missing("fcnseg.quantize.nothing")) is None
    assert cli.missing_extra_message("train", _missing("left_pad")) is None
    assert cli.missing_extra_message("train", ImportError("cannot import name 'x'")) is None


def test_other_import_errors_still_raise(monkeypatch):
    """A broken install or a bug keeps its traceback: only known extras become one line."""

    def broken(*_: object) -> None:
        raise _missing("fcnseg.quantize.nothing")

    monkeypatch.setattr("fcnseg.quantize.cli._open_eval_dataset", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["eval", "--package", str(ROOT)])


def test_the_table_matches_the_extras_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the board env runs 3.10)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = {
        extra: {re.split(r"[<>=!~ ;\[]", requirement)[0].lower() for requirement in requirements}
        for extra, requirements in extras.items()
    }
    for module, (module_extras, distribution) in cli.MODULE_EXTRAS.items():
        for extra in module_extras:
            if distribution == "finn-plus":  # installed with --no-deps beside the extra
                assert "finn-plus==1.6.1" in cli.EXTRA_NOTES[extra], module
                continue
            assert distribution in named[extra], (module, extra)
    assert set(cli.COMMAND_EXTRAS.values()) <= set(named)
