"""The board install guide (docs/board.md) matches what the ``pynq`` backend imports.

A subprocess records every executed ``import`` statement (a ``builtins.__import__`` hook: who
imported which top-level module), opens the backend through the registry on the emulated board
and runs a tile. The modules reachable from fcnseg — not expanding the modules a PYNQ image
provides (pynq, numpy, matplotlib), whose own dependencies come with the image — must be exactly
the guide's list for that transport, and each must come from a distribution the guide installs.
Runs where pynq is installed (``.venv-board``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pynq")

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "board.md"
PACKAGE = Path(__file__).parent / "data" / "fcn8s-tiny"
IMAGE_PROVIDED = {"pynq", "numpy", "matplotlib"}

PROBE = r"""
import builtins, json, sys
STD = set(sys.stdlib_module_names)
EDGES = set()
_real = builtins.__import__

def _hook(name, globals=None, locals=None, fromlist=(), level=0):
    module = _real(name, globals, locals, fromlist, level)
    if level == 0:
        top = name.partition(".")[0]
        importer = (globals or {}).get("__name__", "__main__")
        # the emulated device stands in for pynq's own device classes on a board
        src = "pynq" if importer.startswith("fcnseg.testing.emulated_zynq") else (
            importer.partition(".")[0])
        if top not in STD and not top.startswith("_") and src != top:
            EDGES.add((src, top))
    return module

builtins.__import__ = _hook
import tempfile
from pathlib import Path
import numpy as np
from fcnseg.host.backends import open_engine
from fcnseg.testing import emulated_zynq as ez
from fcnseg.host.package import load_package

package = load_package(sys.argv[2])
board = load_package(ez.emulated_package(package, Path(tempfile.mkdtemp()) / "pkg"))
with ez.EmulatedZynq(ez.sim_accelerator(package)):
    engine = open_engine("pynq", board, transport=sys.argv[1])
    engine.run(np.zeros((1, *package.tile, 3), np.uint8))
    assert engine.transport == sys.argv[1]
builtins.__import__ = _real
print(json.dumps(sorted(EDGES)))
"""


def guide_entries(kind: str) -> dict[str, dict[str, str]]:
    """``<!-- kind transport=... key="a b" ... -->`` lines of the guide, by transport."""
    out = {}
    for line in re.findall(rf"<!-- {kind} (.*?) -->", GUIDE.read_text()):
        fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|(\S+))', line)}
        out[fields["transport"]] = fields
    return out


def surface(transport: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, transport, str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    edges = json.loads(done.stdout.strip().splitlines()[-1])
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    reached, todo = set(), ["fcnseg"]
    while todo:
        mod = todo.pop()
        if mod in reached:
            continue
        reached.add(mod)
        if mod not in IMAGE_PROVIDED:
            todo.extend(graph.get(mod, ()))
    return reached - {"fcnseg"}


@pytest.mark.parametrize("transport", ["builtin", "finn"])
def test_import_surface_is_what_the_guide_installs(transport):
    documented = guide_entries("import-surface")[transport]["modules"].split()
    assert surface(transport) == set(documented)
    install = guide_entries("install")[transport]
    provided = {d.lower() for d in (install["image"] + " " + install["pip"]).split()}
    dists = module_distributions()
    for module in documented:
        names = {d.lower() for d in dists.get(module, ())}
        assert names & provided, f"{module} ({names}) is not installed by the guide"


@functools.lru_cache(maxsize=1)
def module_distributions() -> dict[str, set[str]]:
    """Top-level import name -> distributions whose RECORD lists files under it."""
    out: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        record = dist.read_text("RECORD") or ""
        tops = {line.split(",", 1)[0].split("/", 1)[0] for line in record.splitlines()}
        for top in tops:
            top = top[:-3] if top.endswith(".py") else top
            if top and top != ".." and not top.endswith((".dist-info", ".data", ".pth")):
                out.setdefault(top, set()).add(dist.metadata["Name"])
    return out


def test_backend_module_imports_without_pynq():
    code = (
        "import sys, fcnseg.host.backends.pynq as b; "
        "assert 'pynq' not in sys.modules and 'finn_plus_driver' not in sys.modules; "
        "assert 'qonnx' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_guide_pins_match_the_board_lock():
    """Versions the guide's install commands pin are the ones the board environment (and
    these tests) use."""
    lock = {}
    for line in (ROOT / "requirements" / "board.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        lock[name.strip().lower()] = version.strip()
    text = GUIDE.read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.strip().startswith("pip install")]
    pins = re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s`\"']*)", "\n".join(commands))
    assert pins
    for name, version in pins:
        if name.lower() in lock:
            assert lock[name.lower()] == version, f"{name}=={version} vs lock {lock[name.lower()]}"
