"""A tile too small for an exact stitch is said at export, compile and info, with the smallest
exact tile (:func:`fcnseg.hw.info.tiling_warning`).

The smallest exact tile is checked against a brute force over the host's own tiling plans
(:func:`fcnseg.host.tiling.plan_tiles`: every canvas up to many tiles long), not against the
formula the code uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcnseg.host.tiling import Geometry, plan_tiles
from fcnseg.hw.info import (
    accelerator_facts,
    describe,
    facts_lines,
    format_info,
    info_summary,
    tiling_warning,
)
from fcnseg.hw.report import format_table

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "host" / "packages" / "fcn8s-zcu104"  # 256x256, receptive field 182, g 32


def all_exact(geometry: Geometry) -> bool:
    """Every canvas from one tile to ~10 tiles long, along each axis, plans exactly."""
    th, tw = geometry.tile
    g = geometry.net_stride
    lengths = range(0, 10 * max(th, tw) + g, g)
    return all(plan_tiles(geometry, (th + a, tw)).exact for a in lengths) and all(
        plan_tiles(geometry, (th, tw + a)).exact for a in lengths
    )


def brute_smallest_side(output_stride: int, net_stride: int, field: int) -> int:
    """The shortest square tile side for which every plan is exact, by trying them in order."""
    side = net_stride
    while not all_exact(Geometry((side, side), output_stride, net_stride, field)):
        side += net_stride
    return side


@pytest.mark.parametrize(
    ("s", "g", "field"),
    [(1, 2, 5), (2, 4, 13), (4, 8, 40), (8, 32, 158), (8, 32, 182), (8, 8, 9), (4, 4, 3)],
)
def test_smallest_exact_tile_is_the_brute_force_one(s, g, field):
    side = brute_smallest_side(s, g, field)
    at = Geometry((side, side), s, g, field)
    assert at.smallest_exact_side == side
    assert tiling_warning(at) is None  # exactly at the bound: exact, no warning
    if side > g:
        below = Geometry((side - g, side - g), s, g, field)
        assert not all_exact(below)  # one net stride less: some canvas is not exact
        warning = tiling_warning(below)
        assert warning is not None
        assert f"smallest exact tile is {side}x{side} px (at least {side} px per side)" in warning


def test_one_short_side_is_enough_to_lose_exactness():
    """plan_tiles caps both axes' overlap at the short side - g: a wide strip is not exact."""
    g, field = 32, 158  # exact side 160
    strip = Geometry((128, 512), 8, g, field)
    assert not all_exact(strip)
    warning = tiling_warning(strip)
    assert warning is not None and "smallest exact tile is 160x512 px" in warning
    assert tiling_warning(Geometry((160, 512), 8, g, field)) is None
    assert all_exact(Geometry((160, 512), 8, g, field))


def test_unknown_receptive_field_gives_no_claim():
    geometry = Geometry((64, 64), 8, 32, None)
    assert geometry.smallest_exact_side is None and tiling_warning(geometry) is None


def test_export_cli_warns_at_a_small_tile(tmp_path, capsys):
    """``fcnseg export --tile 64 64`` of a tiny FCN-8s (receptive field 158, g 32): 160x160."""
    pytest.importorskip("torch")
    from fcnseg.cli import main
    from fcnseg.quantize.export import tiling_warning as card_warning
    from fcnseg.quantize.models.io import save_checkpoint
    from tests.helpers.fcn_nets import calibrated

    model = calibrated("fcn8s", size=(64, 64))
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, model.cfg, {})
    out = tmp_path / "export"
    assert main(["export", str(ckpt), "--tile", "64", "96", "-o", str(out)]) == 0
    card = json.loads((out / "model.json").read_text())
    side = brute_smallest_side(card["output_stride"], card["net_stride"], card["receptive_field"])
    assert side == 160
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning: tile 64x96 px")]
    assert len(lines) == 1
    assert "smallest exact tile is 160x160 px (at least 160 px per side)" in lines[0]
    assert card_warning(card) == lines[0].removeprefix("warning: ")
    assert card_warning({**card, "tile": [160, 192]}) is None  # the bound itself is exact


def test_compile_and_info_warn_on_the_tiny_package(build_fcn8s):
    """The session's tiny FCN-8s build (64x64 tile, receptive field 158, g 32)."""
    expected = "smallest exact tile is 160x160 px (at least 160 px per side)"
    warned = [m for m in build_fcn8s.messages if m.startswith("warning: tile 64x64 px")]
    assert len(warned) == 1 and expected in warned[0]
    summary = build_fcn8s.summary
    assert summary["tiling_warning"] == warned[0].removeprefix("warning: ")
    assert f"warning: {summary['tiling_warning']}" in format_table(summary).splitlines()

    described = describe(build_fcn8s.out_dir)  # the build folder with its package/ on disk
    assert described.package is not None and described.summary is not None
    facts = accelerator_facts(described.package)
    assert facts["tiling_warning"] == summary["tiling_warning"]
    geometry = described.package.geometry
    assert (
        brute_smallest_side(geometry.output_stride, geometry.net_stride, geometry.receptive_field)
        == 160
    )
    shown = info_summary(described, (512, 1024))
    assert shown["tiling_warning"] == summary["tiling_warning"]
    text = format_info(shown)
    assert text.count(expected) == 1  # once: in the table, not again in the facts above it
    assert f"warning: {summary['tiling_warning']}" in text.splitlines()
    # A package alone (no estimates, e.g. one written by the API): the facts say it.
    bare = format_info({"accelerator": facts})
    assert f"warning  {summary['tiling_warning']}" in bare.splitlines()
    assert bare.count(expected) == 1
    # The overlap plan_tiles uses is capped at 64 - 32: tiles 32 px apart (not 64 - 128 = -64).
    assert "exact overlap 128 px (tiles 32 px apart at most)" in bare


def test_info_is_quiet_on_an_exact_package():
    """The shipped 256x256 package (exact overlap 192, smallest exact side 224) does not warn."""
    described = describe(SHIPPED)
    geometry = described.package.geometry
    side = brute_smallest_side(geometry.output_stride, geometry.net_stride, 182)
    assert geometry.receptive_field == 182 and side == 224 <= min(geometry.tile)
    facts = accelerator_facts(described.package)
    assert facts["tiling_warning"] is None
    assert not any(line.startswith("warning") for line in facts_lines(facts))
    assert "warning" not in format_info(info_summary(described, (512, 1024)))
