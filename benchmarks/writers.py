"""Write the results: ``results.json`` (the data) and ``RESULTS.md`` (tables for people).

Both are written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader never sees half a file, with the usual 0644 permissions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from fcnseg.atomic import atomic_write_text

INTRO = """\
Written by `make bench` (`fcnseg bench -o bench ...`); regenerate with the same command. Every
timed figure is compared with a reference measured in the same run, the two timed **in turns**
(one repetition of each, then the next), on **CPU time** (`thread` clock: the calling thread;
`process` clock: all threads, where the measured code may use several) and on **wall time**. A
ratio is taken per repetition and summarised over the repetitions: a cell `m [lo–hi]` is the
median `m` and the range (min–max) over `reps` repetitions (results.json also has the
quartiles). CPU-time ratios are the steadier ones: waiting for a core that other work holds is
not counted. When the load average below is near or above the number of cores, wall times are
noisy; the spread shows by how much. Headline ratios are judged on the median CPU-time ratio.
Hardware figures are finn-plus **estimates** (no bitfile is built on this machine).
"""


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, paths -> str, tuples -> lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def to_json(results: dict[str, Any]) -> str:
    return json.dumps(_clean(results), indent=1, allow_nan=False) + "\n"


def is_spread(value: Any) -> bool:
    """A spread cell (:func:`fcnseg.benchmarks.timing.spread`): median, min, max, quartiles, n."""
    return isinstance(value, dict) and {"median", "min", "max", "n"} <= set(value)


def spread_text(value: dict[str, Any]) -> str:
    """``median [min–max]`` (just the median for one repetition)."""
    if value["n"] == 1 or value["min"] == value["max"]:
        return f"{value['median']:g}"
    return f"{value['median']:g} [{value['min']:g}–{value['max']:g}]"


def _cell(value: Any) -> str:
    if is_spread(value):
        return spread_text(value)
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def _prose(text: str) -> list[str]:
    """A docstring-like method text as Markdown: paragraphs re-flowed, ``- `` items kept."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        items: list[str] = []
        for line in paragraph.splitlines():
            if line.lstrip().startswith("- ") or not items:
                items.append(line.strip())
            else:
                items[-1] += " " + line.strip()
        out += ["", *items]
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
    return lines


def _load(values: Any) -> str:
    return "–" if not values else " / ".join(f"{v:g}" for v in values)


def _goal(h: dict[str, Any]) -> str:
    if not h.get("goal"):
        return ""
    verdict = {True: "met", False: "NOT met", None: "n/a"}[h.get("met")]
    return f"goal {h['goal']}{h['unit']}: {verdict}"


def _headline_spread(h: dict[str, Any]) -> str:
    """``CPU m [lo–hi]; wall m [lo–hi] (n reps, thread clock)`` for a ratio's headline."""
    if not is_spread(h.get("cpu")):
        return ""
    return (
        f"CPU {spread_text(h['cpu'])}; wall {spread_text(h['wall'])} "
        f"({h.get('reps')} reps, {h.get('clock')} clock)"
    )


def to_markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md text: machine, summary of headline figures, one section per benchmark."""
    m = results.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    out = ["# fcnseg benchmark results", "", INTRO]
    out += [
        f"- Date: {m.get('date')}; run took {results.get('seconds')} s "
        f"(options: {results.get('options')})",
        f"- Machine: {m.get('cores')} cores, {m.get('cpu_model')} ({m.get('machine')}), "
        f"Python {m.get('python')}; load average (1/5/15 min) at the start "
        f"{_load(m.get('load_average_start'))}, at the end {_load(m.get('load_average_end'))}",
        f"- Versions: {versions}",
    ]
    subject = results.get("subject")
    if subject:
        cfg = subject.get("model_config") or {}
        out.append(
            f"- Subject: {subject.get('source')} FCN-8s, package `{subject.get('package')}`, "
            f"tile {subject.get('tile')}, {subject.get('classes')} classes, widths "
            f"{cfg.get('widths')}, {cfg.get('weight_bits')}-bit weights / "
            f"{cfg.get('act_bits')}-bit activations"
        )
    out += [
        "",
        "## Headline figures",
        "",
        "| benchmark | figure | value | goal | spread (reps, clock) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.get("benchmarks", {}).items():
        if r.get("status") in ("skipped", "error"):
            out.append(f"| {name} | {r['status']}: {_cell(r.get('reason'))} | | | |")
            continue
        for h in r.get("headline", []):
            value = "–" if h["value"] is None else f"{_cell(h['value'])} {h['unit']}"
            out.append(
                f"| {name} | {_cell(h['figure'])} | {value} | {_goal(h)} | {_headline_spread(h)} |"
            )
    for name, r in results.get("benchmarks", {}).items():
        out += ["", f"## {name}: {r.get('title', name)}", ""]
        out.append(
            f"Status: **{r.get('status')}**"
            + (f" ({r['reason']})" if r.get("reason") else "")
            + f"; {r.get('seconds')} s."
        )
        if r.get("method"):
            out += _prose(r["method"])
        if r.get("rows"):
            out += ["", *_table(r["rows"])]
        if r.get("checks") or r.get("notes"):
            out.append("")
        for c in r.get("checks", []):
            mark = "PASS" if c["passed"] else "FAIL"
            detail = f" ({c['detail']})" if c.get("detail") else ""
            out.append(f"- {mark}: {c['name']}{detail}")
        for note in r.get("notes", []):
            out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/results.json`` and ``out_dir/RESULTS.md``; returns both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "results.json", out_dir / "RESULTS.md"
    atomic_write_text(json_path, to_json(results))
    atomic_write_text(md_path, to_markdown(_clean(results)))
    return json_path, md_path
