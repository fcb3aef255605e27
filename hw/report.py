"""Build reports: per-layer cycles, resources and folding; FPS, latency and the bottleneck.

Collected from finn's ``report/estimate_*.json`` into one summary dict, written as
``report/fcnseg_summary.json`` (+ the same table as text in ``fcnseg_summary.txt``) and stored in
the package's ``estimates``, so ``fcnseg info`` can print it again from a build folder or a
package without finn. Pure Python (json, math): importable on a board.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcnseg.errors import UserError

SUMMARY_JSON = "fcnseg_summary.json"
SUMMARY_TXT = "fcnseg_summary.txt"
_RES = ("LUT", "BRAM_18K", "URAM", "DSP")


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}


def summarize(
    report_dir: Path,
    *,
    folding: Mapping[str, Mapping[str, Any]],
    board: Mapping[str, Any],
    clock_ns: float,
    fit: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One summary dict from finn's estimate reports in ``report_dir``.

    ``folding``: final node name -> {PE, SIMD, ...}. FPS and latency are recomputed at
    ``clock_ns`` from the cycle estimates (finn's own figures use the same formula).
    """
    cycles: dict[str, int] = _load(report_dir / "estimate_layer_cycles.json")
    resources: dict[str, dict] = _load(report_dir / "estimate_layer_resources.json")
    perf: dict[str, Any] = _load(report_dir / "estimate_network_performance.json")
    if not cycles or not perf:
        raise UserError(f"no finn estimate reports in {report_dir}")
    layers = []
    for name, c in cycles.items():
        res = resources.get(name, {})
        fold = folding.get(name, {})
        layers.append(
            {
                "name": name,
                "cycles": int(c),
                **{r: float(res.get(r, 0.0)) for r in _RES},
                "PE": fold.get("PE"),
                "SIMD": fold.get("SIMD"),
            }
        )
    max_cycles = int(perf["max_cycles"])
    fps = 1e9 / clock_ns / max_cycles
    total = {r: float(resources.get("total", {}).get(r, 0.0)) for r in _RES}
    return {
        "board": dict(board),
        "clock_ns": clock_ns,
        "clock_mhz": 1e3 / clock_ns,
        "estimated_fps": fps,
        "estimated_latency_ms": int(perf["critical_path_cycles"]) * clock_ns * 1e-6,
        "max_cycles": max_cycles,
        "critical_path_cycles": int(perf["critical_path_cycles"]),
        "bottleneck": perf.get("max_cycles_node_name"),
        "total": total,
        "layers": layers,
        "fit": dict(fit) if fit else None,
        **dict(extra or {}),
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """The per-layer table and the headline figures, as terminal text."""
    head = f"{'layer':34} {'cycles':>9} {'PE':>4} {'SIMD':>4} {'LUT':>8} {'BRAM18':>7}"
    head += f" {'URAM':>5} {'DSP':>5}"
    lines = [head, "-" * len(head)]
    for layer in summary["layers"]:
        mark = " <- bottleneck" if layer["name"] == summary.get("bottleneck") else ""
        pe = "" if layer.get("PE") is None else str(layer["PE"])
        simd = "" if layer.get("SIMD") is None else str(layer["SIMD"])
        lines.append(
            f"{layer['name'][:34]:34} {layer['cycles']:>9} {pe:>4} {simd:>4} "
            f"{layer['LUT']:>8.0f} {layer['BRAM_18K']:>7.0f} {layer['URAM']:>5.0f} "
            f"{layer['DSP']:>5.0f}{mark}"
        )
    t = summary["total"]
    lines.append("-" * len(head))
    lines.append(
        f"{'total':34} {'':>9} {'':>4} {'':>4} {t['LUT']:>8.0f} {t['BRAM_18K']:>7.0f} "
        f"{t['URAM']:>5.0f} {t['DSP']:>5.0f}"
    )
    board = summary.get("board") or {}
    lines.append("")
    lines.append(
        f"estimated {summary['estimated_fps']:.1f} FPS, latency "
        f"{summary['estimated_latency_ms']:.2f} ms at {summary['clock_mhz']:.0f} MHz "
        f"({summary['max_cycles']} cycles/frame, bottleneck {summary.get('bottleneck')})"
    )
    fit = summary.get("fit")
    if fit:
        util = ", ".join(f"{r} {u:.0%}" for r, u in fit["utilisation"].items())
        verdict = "fits" if fit["fits"] else "DOES NOT FIT"
        lines.append(
            f"board {board.get('name')} ({board.get('part')}): {verdict} with a "
            f"{fit['margin']:.0%} margin; utilisation {util}"
        )
    if summary.get("refold"):
        r = summary["refold"]
        lines.append(
            f"re-folded to fit: target {r['requested_fps']} FPS did not fit, "
            f"reached {r['reached_fps']:.1f} FPS after {len(r['probes'])} foldings"
        )
    frames = summary.get("frames")
    if frames:
        lines.append(
            f"{frames['frame'][0]}x{frames['frame'][1]} frames: {frames['tiles_per_frame']} tiles "
            f"of {frames['tile'][0]}x{frames['tile'][1]} (overlap {frames['overlap']} px) -> "
            f"{frames['frames_per_s']:.1f} frames/s"
        )
    return "\n".join(lines)


def write_reports(summary: Mapping[str, Any], report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2))
    (report_dir / SUMMARY_TXT).write_text(format_table(summary) + "\n")


def load_summary(path: Path) -> dict[str, Any]:
    """The summary of a build folder (``report/fcnseg_summary.json``) or a deployment package
    (``accelerator.json`` -> ``estimates``)."""
    path = Path(path)
    for candidate in (path / "report" / SUMMARY_JSON, path / SUMMARY_JSON):
        if candidate.exists():
            return json.loads(candidate.read_text())
    accel = path / "accelerator.json"
    if accel.exists():
        estimates = json.loads(accel.read_text()).get("estimates") or {}
        if "layers" in estimates:
            return estimates
        raise UserError(f"{accel} carries no estimate reports")
    if (path / "package" / "accelerator.json").exists():
        return load_summary(path / "package")
    raise UserError(f"{path} is neither an fcnseg build folder nor a deployment package")
