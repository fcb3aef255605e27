"""The notebooks in notebooks/: committed without outputs, and every cell runs on the simulator.

- In ``.venv`` each notebook is executed cell by cell in a Jupyter kernel (nbclient, what nbmake
  uses), the way a user runs it; a failing cell fails the test with the cell's traceback.
- In ``.venv-board`` (the board's truth: no torch, no Jupyter) the notebooks meant for the board
  run as plain Python in a subprocess (their code cells concatenated, matplotlib's Agg backend):
  that is the check that they need nothing a PYNQ image lacks.

Notebooks declare what they need in their metadata, ``{"fcnseg": {"needs": ["torch", ...],
"slow": bool}}``; notebooks that need the deployment package skip when the shipped default is
absent and ``FCNSEG_PACKAGE`` does not name another one (``"package": "classifier"``: the
shipped classifier and ``FCNSEG_CLASSIFIER_PACKAGE``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: seconds one notebook may take (05 trains, exports and compiles: finn takes most of it)
TIMEOUT = {"fast": 180, "slow": 600}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _meta(path: Path) -> dict:
    return _read(path).get("metadata", {}).get("fcnseg", {})


def _params(marks_slow: bool = True) -> list:
    params = []
    for path in NOTEBOOKS:
        marks = [pytest.mark.slow] if marks_slow and _meta(path).get("slow") else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def _skip_unless_runnable(path: Path) -> None:
    meta = _meta(path)
    for module in meta.get("needs", []):  # "a|b": either will do (06: PyAV or cv2)
        if all(importlib.util.find_spec(m) is None for m in module.split("|")):
            pytest.skip(f"{path.name} needs {module}, not installed here")
    if meta.get("package") == "classifier":  # 07: the shipped classifier, or one named
        from fcnseg.host.classify import DEFAULT_PACKAGE as CLASSIFIER

        if (
            not os.environ.get("FCNSEG_CLASSIFIER_PACKAGE")
            and not (CLASSIFIER / "accelerator.json").is_file()
        ):
            pytest.skip(f"no classifier in {CLASSIFIER} (set FCNSEG_CLASSIFIER_PACKAGE=DIR)")
    elif meta.get("package", True) and not os.environ.get("FCNSEG_PACKAGE"):
        from fcnseg.host.segmenter import DEFAULT_PACKAGE

        if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
            pytest.skip(f"no default package in {DEFAULT_PACKAGE} (set FCNSEG_PACKAGE=DIR)")


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", _params(marks_slow=False))
def test_committed_without_outputs(path: Path):
    nb = _read(path)
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("path", _params())
def test_notebook_runs(path: Path):
    _skip_unless_runnable(path)
    timeout = TIMEOUT["slow" if _meta(path).get("slow") else "fast"]
    if importlib.util.find_spec("nbclient") is not None:
        _run_in_kernel(path, timeout)
    elif _meta(path).get("board", False):
        _run_as_script(path, timeout)
    else:
        pytest.skip("no nbclient here, and the notebook is not meant for the board")


def _run_in_kernel(path: Path, timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    if _meta(path).get("board", False):
        text = "".join(
            out.get("text", "")
            for cell in nb.cells
            if cell.cell_type == "code"
            for out in cell.get("outputs", [])
        )
        assert "backend: sim" in text, "a board notebook says which backend ran"


def _run_as_script(path: Path, timeout: int) -> None:
    cells = [c for c in _read(path)["cells"] if c["cell_type"] == "code"]
    code = "\n\n".join("".join(c["source"]) for c in cells)
    assert "get_ipython" not in code and "\n%" not in code, "board notebooks use no magics"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=NOTEBOOK_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{path.name} failed:\n{tail}"
    assert "backend: sim" in proc.stdout
