"""Issue 9, item 6: no unsafe loading anywhere in the repository's Python code.

Every tracked ``.py`` file (and every code cell of the notebooks) is parsed and its calls are
checked, so a call split over lines or aliased through ``import numpy as np`` is still seen, and
text in strings or comments is not mistaken for code:

- ``np.load`` / ``numpy.load`` must pass ``allow_pickle=False`` (numpy's default is False since
  1.16.3, but the explicit keyword is the project rule: a reader can see it, and a later
  ``allow_pickle=True`` edit stands out);
- ``pickle`` / ``cPickle`` / ``dill`` / ``joblib`` / ``shelve`` / ``marshal`` loading, and
  ``pandas.read_pickle``, are not used at all: a pickle of a user file runs code;
- ``torch.load`` must pass ``weights_only=True``;
- no ``shell=True`` in a call (subprocess and friends), no ``os.system`` / ``os.popen``;
- no ``yaml.load`` without a safe loader (``yaml.safe_load`` is fine).

The checker is tested on planted bad lines in a temporary file, so an empty result means
something.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (module, attribute) calls that load pickles: never allowed.
PICKLE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "load"),
    ("cPickle", "loads"),
    ("_pickle", "load"),
    ("_pickle", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("joblib", "load"),
    ("shelve", "open"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("pandas", "read_pickle"),
    ("numpy", "loads"),
}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module or ``module.attr`` it stands for (``np`` -> ``numpy``, ...)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _target(func: ast.expr, aliases: dict[str, str]) -> tuple[str, str] | None:
    """``(module, attribute)`` a call goes to, as far as names show it."""
    if isinstance(func, ast.Attribute):
        base = func.value
        parts = [func.attr]
        while isinstance(base, ast.Attribute):
            parts.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            module = aliases.get(base.id, base.id)
            dotted = ".".join([module, *reversed(parts[1:])])
            return dotted, func.attr
    if isinstance(func, ast.Name) and "." in aliases.get(func.id, ""):
        module, _, attr = aliases[func.id].rpartition(".")
        return module, attr
    return None


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Problems in ``source``: ``"file:line: what"`` per unsafe call."""
    tree = ast.parse(source, filename=filename)
    aliases = _aliases(tree)
    found: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if _keyword(node, "shell") not in (None, False):
            bad(node, "shell=True")
        target = _target(node.func, aliases)
        if target is None:
            continue
        module, attr = target
        root = module.split(".")[0]
        if (root, attr) in PICKLE_LOADERS or (module, attr) in PICKLE_LOADERS:
            bad(node, f"{module}.{attr} loads pickles")
        elif root == "numpy" and attr == "load" and _keyword(node, "allow_pickle") is not False:
            bad(node, "np.load without allow_pickle=False")
        elif root == "torch" and attr == "load" and _keyword(node, "weights_only") is not True:
            bad(node, "torch.load without weights_only=True")
        elif root == "os" and attr in ("system", "popen"):
            bad(node, f"os.{attr}")
        elif root == "yaml" and attr in ("load", "load_all", "unsafe_load", "full_load"):
            loader = _keyword(node, "Loader")
            if attr != "load" or loader is None or "Safe" not in ast.unparse(node):
                bad(node, f"yaml.{attr} without SafeLoader")
    return found


def _sources() -> list[tuple[str, str]]:
    """(name, Python source) of every tracked .py file and notebook code cell."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*.py", "*.ipynb"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    out = []
    for rel in filter(None, listed.split("\0")):
        path = ROOT / rel
        if not path.is_file():
            continue
        if rel.endswith(".py"):
            out.append((rel, path.read_text(encoding="utf-8")))
            continue
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        for i, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                text = "".join(cell.get("source", []))
                # IPython magics and shell escapes are not Python
                lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("%", "!"))]
                out.append((f"{rel}#cell{i}", "\n".join(lines)))
    return out


def test_repository_has_no_unsafe_loading() -> None:
    sources = _sources()
    assert len(sources) > 20, "found too few sources: is this the repository?"
    problems = [p for name, text in sources for p in unsafe_calls(text, name)]
    assert not problems, "\n".join(problems)


PLANTED = {
    "import numpy as np\nnp.load(path)\n": "allow_pickle",
    "import numpy\nnumpy.load(path, allow_pickle=True)\n": "allow_pickle",
    "from numpy import load\nload(\n    path,\n)\n": "allow_pickle",
    "import pickle\npickle.loads(blob)\n": "pickle",
    "import pickle as pk\npk.load(f)\n": "pickle",
    "from pickle import load\nload(f)\n": "pickle",
    "import joblib\njoblib.load('m.pkl')\n": "joblib",
    "import torch\ntorch.load('m.pt')\n": "weights_only",
    "import torch\ntorch.load('m.pt', weights_only=False)\n": "weights_only",
    "import subprocess\nsubprocess.run(cmd, shell=True)\n": "shell=True",
    "import subprocess as sp\nsp.check_output(f'ls {user}', shell=1)\n": "shell=True",
    "import os\nos.system('rm ' + name)\n": "os.system",
    "import yaml\nyaml.load(text)\n": "yaml",
    "import pandas as pd\npd.read_pickle(p)\n": "pickle",
}

SAFE = (
    "import numpy as np\nnp.load(p, allow_pickle=False)\n"
    "import torch\ntorch.load(p, weights_only=True, map_location='cpu')\n"
    "import subprocess\nsubprocess.run(['ls', p], check=True)\n"
    "import yaml\nyaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)\n"
    "text = 'np.load(x)  pickle.loads(y)  shell=True'  # strings and comments: np.load(z)\n"
)


@pytest.mark.parametrize("source,what", list(PLANTED.items()))
def test_checker_catches_a_planted_bad_line(tmp_path: Path, source: str, what: str) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("x = 1\n" + source)
    problems = unsafe_calls(planted.read_text(), str(planted))
    assert len(problems) == 1 and what in problems[0], problems
    assert problems[0].startswith(f"{planted}:")


def test_checker_accepts_safe_code() -> None:
    assert unsafe_calls(SAFE) == []
