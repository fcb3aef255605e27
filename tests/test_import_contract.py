"""The import contract: the board runtime (host/) imports nothing from the other floors.

``fcnseg.host`` runs on a PYNQ board; ``fcnseg.hw`` (finn-plus), ``fcnseg.quantize`` (torch),
``fcnseg.benchmarks`` (every stage) and ``fcnseg.testing`` (emulated hardware, pynq) do not
belong in its import path, not even behind a function-local import that only one code path
reaches: on a board that path would fail at run time, far from the cause. A fresh-interpreter
check (tests/test_layout.py) only sees module-level imports, so this one reads the source:
every ``import``/``from ... import`` statement anywhere in a module's AST (relative ones
resolved against the module's package, ``from fcnseg import hw`` seen as ``fcnseg.hw``) and
every ``importlib.import_module("...")``/``__import__("...")``/``pytest.importorskip("...")``
with a literal name. The same reader keeps the tests apart: a test module imports shared code
from ``tests.helpers`` (or gets it from a fixture), never from a sibling test module or a
``conftest.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "host"
#: packages the runtime must not import, at any depth.
FORBIDDEN = ("fcnseg.hw", "fcnseg.quantize", "fcnseg.benchmarks", "fcnseg.testing")


def module_of(path: Path, root: Path, package: str) -> tuple[str, bool]:
    """``(dotted module name, is a package __init__)`` of a file under ``root`` (= ``package``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_init = parts[-1] == "__init__"
    if is_init:
        parts = parts[:-1]
    return ".".join([package, *parts]), is_init


def _resolve(module: str, is_init: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_init else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imported_names(source: str, module: str, is_init: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of everything ``source`` may import, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_init, node.level, node.module)
            found.append((node.lineno, target))
            # `from fcnseg import hw` imports the sub-module fcnseg.hw
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _is_import_call(node):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
    names = ("import_module", "__import__", "importorskip")
    return name in names and literal and isinstance(node.args[0].value, str)


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def violations(root: Path = HOST, package: str = "fcnseg.host") -> list[str]:
    """``file:line imports name`` for every forbidden import in the ``.py`` files under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module, is_init = module_of(path, root, package)
        seen = set()
        for line, name in imported_names(path.read_text(), module, is_init):
            if _forbidden(name) and line not in seen:  # one report per statement
                seen.add(line)
                out.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return out


def test_host_imports_nothing_from_the_other_floors() -> None:
    assert len(list(HOST.rglob("*.py"))) > 10  # the scan sees the runtime
    assert violations() == []


def test_checker_catches_planted_imports(tmp_path: Path) -> None:
    """A function-local import, a relative one, a sub-module import and an import_module call
    are all caught; the runtime's own imports are not."""
    host = tmp_path / "host"
    (host / "sub").mkdir(parents=True)
    (host / "__init__.py").write_text("from . import package\nfrom .sub import thing\n")
    (host / "sub" / "__init__.py").write_text("from .. import package\n")
    (host / "sub" / "thing.py").write_text(
        "import numpy as np\n"
        "from fcnseg.errors import UserError\n"
        "from ..package import load_package\n"
        "\n"
        "def measure():\n"
        "    from fcnseg.quantize.models import build_model\n"
        "    return build_model\n"
        "\n"
        "class Lazy:\n"
        "    def run(self):\n"
        "        from ...hw import build\n"
        "        from fcnseg import testing\n"
        "        import importlib\n"
        "        return importlib.import_module('fcnseg.benchmarks.runner')\n"
    )
    found = violations(host, "fcnseg.host")
    assert found == [
        "host/sub/thing.py:6 imports fcnseg.quantize.models",
        "host/sub/thing.py:11 imports fcnseg.hw",
        "host/sub/thing.py:12 imports fcnseg.testing",
        "host/sub/thing.py:14 imports fcnseg.benchmarks.runner",
    ]


def test_relative_imports_resolve_against_the_package() -> None:
    assert _resolve("fcnseg.host.sim.engine", False, 1, "layers") == "fcnseg.host.sim.layers"
    assert _resolve("fcnseg.host.sim.engine", False, 2, "package") == "fcnseg.host.package"
    assert _resolve("fcnseg.host.sim", True, 1, "engine") == "fcnseg.host.sim.engine"
    assert _resolve("fcnseg.host.sim", True, 3, "hw") == "fcnseg.hw"
    assert _resolve("fcnseg.host.cli", False, 2, None) == "fcnseg"


def sibling_imports(tests: Path) -> list[str]:
    """``file:line imports name`` for test code importing ``tests.<not helpers>`` or a conftest."""
    bad = []
    for path in sorted(tests.rglob("*.py")):
        module, is_init = module_of(path, tests, "tests")
        seen = set()
        for line, name in imported_names(path.read_text(), module, is_init):
            parts = name.split(".")
            sibling = parts[0] == "tests" and len(parts) > 1 and parts[1] != "helpers"
            if (sibling or "conftest" in parts) and line not in seen:
                seen.add(line)
                bad.append(f"{path.relative_to(tests.parent)}:{line} imports {name}")
    return bad


def test_tests_import_helpers_not_sibling_tests_or_conftest() -> None:
    assert sibling_imports(ROOT / "tests") == []


def test_sibling_check_catches_planted_imports(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "host").mkdir(parents=True)
    (tests / "host" / "test_a.py").write_text(
        "from tests.helpers.images import image\n"
        "from .test_b import toy\n"
        "def test_x(pytest):\n"
        "    from tests.hw.conftest import TILE\n"
        "    pytest.importorskip('tests.host.test_b')\n"
    )
    assert sibling_imports(tests) == [
        "tests/host/test_a.py:2 imports tests.host.test_b",
        "tests/host/test_a.py:4 imports tests.hw.conftest",
        "tests/host/test_a.py:5 imports tests.host.test_b",
    ]
