"""`make train/export/hw` never write the shipped artifacts; `make rebuild-shipped` does.

A user's `make export` once replaced the shipped `models/default-fcn8s/export` with their own
model. The recipes are read from `make -n` (what make would run) and every path a command writes
(``-o``/``--output``, cp/mv/rm/touch/mkdir targets, shell redirections) is checked against the
tracked folders. The explicit target is the positive control: the same parser must see it write
both places, so the check can fail.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "models", ROOT / "host" / "packages")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

#: commands whose every non-option argument is written (created, replaced or deleted)
ALL_ARGS_WRITTEN = {"rm", "touch", "mkdir", "tee"}
#: commands whose last argument is written
LAST_ARG_WRITTEN = {"cp", "mv", "rsync", "install", "ln"}
SEPARATORS = {"&&", "||", ";", "|"}


def dry_run(*args: str) -> list[str]:
    """The command lines ``make -n ARGS`` prints (make's own messages dropped)."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line and not line.startswith("make")]


def _segments(line: str) -> list[list[str]]:
    """A shell line split into simple commands (at &&, ||, ; and |)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


def written_paths(line: str) -> list[str]:
    """Every path one shell line writes, as far as a recipe line can say."""
    paths: list[str] = []
    for words in _segments(line):
        redirected = {i + 1 for i, word in enumerate(words) if word in (">", ">>")}
        paths += [words[i] for i in sorted(redirected) if i < len(words)]
        words = [w for i, w in enumerate(words) if i not in redirected and w not in (">", ">>")]
        for i, word in enumerate(words[:-1]):
            if word in ("-o", "--output"):
                paths.append(words[i + 1])
        paths += [w.split("=", 1)[1] for w in words if w.startswith("--output=")]
        name = Path(words[0]).name
        operands = [w for w in words[1:] if not w.startswith("-")]
        if name in ALL_ARGS_WRITTEN:
            paths += operands
        elif name in LAST_ARG_WRITTEN and operands:
            paths.append(operands[-1])
    return paths


def shipped_writes(lines: list[str]) -> list[str]:
    """The written paths that fall inside a git-tracked shipped folder."""
    hits = []
    for line in lines:
        for path in written_paths(line):
            resolved = (ROOT / path).resolve()
            if any(resolved == top or top in resolved.parents for top in SHIPPED):
                hits.append(path)
    return hits


def test_the_parser_sees_what_a_line_writes():
    line = "a -o x/y && cp -R src dst; rm -rf old new | tee log > out"
    assert written_paths(line) == ["x/y", "dst", "old", "new", "out", "log"]
    assert written_paths("fcnseg export ck --output=models/m/export") == ["models/m/export"]


@pytest.mark.parametrize(
    "args",
    [
        ("train",),
        ("export",),
        ("hw",),
        ("hw", "BOARD=zcu104"),
        ("train", "export", "hw", "BOARD=kv260"),
        ("train", "CONFIG=quantize/configs/default-fcn32s.json", "RUN=runs/default-fcn32s"),
        ("export", "RUN=runs/default-fcn32s"),
        ("train", "TRAIN_ARGS=--resume --steps-per-epoch 5"),
    ],
)
def test_default_targets_never_write_the_shipped_artifacts(args):
    lines = dry_run(*args)
    commands = [line for line in lines if "fcnseg " in line]
    assert commands, lines  # the recipe ran through fcnseg
    assert shipped_writes(lines) == [], lines
    for line in commands:
        assert any(p.startswith(("runs/", "build/")) for p in written_paths(line)), line


def test_export_and_hw_chain_through_build():
    (export_line,) = [line for line in dry_run("export") if "fcnseg export" in line]
    (hw_line,) = [line for line in dry_run("hw") if "fcnseg compile" in line]
    assert "runs/default-fcn8s/best.safetensors" in export_line
    export_dir = written_paths(export_line)[-1]
    assert export_dir.startswith("build/")
    assert f"compile {export_dir} " in hw_line  # hw compiles what export wrote


def test_only_the_explicit_target_rebuilds_the_shipped_artifacts():
    lines = dry_run("rebuild-shipped")
    hits = shipped_writes(lines)
    assert "models/default-fcn8s/export" in hits and "models/default-fcn32s/export" in hits
    assert "host/packages/fcn8s-pynq-z2" in hits and "host/packages/fcn8s-zcu104" in hits
    # it exports from the committed checkpoints, not from a user's run
    exports = [line for line in lines if "fcnseg export" in line]
    assert exports and all("models/" in line and "runs/" not in line for line in exports)


def test_the_explicit_target_is_documented():
    help_text = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "rebuild-shipped" in help_text
    assert "make rebuild-shipped" in (ROOT / "models" / "README.md").read_text()
