"""The model card (host/card.py): one typed record, validated once, with one-line errors.

numpy-only (runs in the board environment too): the shipped packages' cards, the rules for
missing and malformed keys, the one geometry constructor, and refusal through the package
loader and the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fcnseg.errors import UserError
from fcnseg.host.card import CARD_FORMAT, ModelCard
from fcnseg.host.package import load_package
from fcnseg.host.tiling import Geometry
from tests.helpers.tamper import tamper

ROOT = Path(__file__).resolve().parents[2]
#: the shipped segmentation packages (FCN-8s); the classifier has a test of its own
SHIPPED = sorted((ROOT / "host" / "packages").glob("fcn8s-*/accelerator.json"))
SHIPPED_CLASSIFIER = ROOT / "host" / "packages" / "classifier-pynq-z2"

#: the smallest valid card, and a full one in the export's shape
MINIMAL = {"classes": ["bg", "fg"], "output_stride": 8}
FULL: dict[str, Any] = {
    "format": CARD_FORMAT,
    "arch": "fcn8s",
    "quantized": True,
    "classes": ["bg", "fg"],
    "palette": [[0, 0, 0], [128, 0, 0]],
    "tile": [64, 96],
    "output_stride": 8,
    "net_stride": 32,
    "receptive_field": 100,
    "output_scale": [0.5, 0.25],
    "output_bias": [0.0, 1.0],
    "model_config": {"arch": "fcn8s", "depths": [1, 1, 2, 2, 1]},
    "source_checkpoint": {"file": "c.safetensors", "sha256": "ab" * 32},
    "input": {"name": "global_in", "dtype": "UINT8"},
    "metrics": {"mean_iu": 0.7},
    "export_seconds": 1.5,
}


def _one_line_error(data: Any) -> str:
    with pytest.raises(UserError) as info:
        ModelCard.from_json(data, where="card.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("card.json: ")
    return message


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_cards_parse_and_give_the_tiling_geometry(path: Path) -> None:
    pkg = load_package(path.parent)
    card = pkg.card
    assert card.classes[0] == "background" and card.num_classes == pkg.num_classes == 7
    # the 256x256 packages, and the tiles compile --frame 512 1024 chose
    chosen = {"fcn8s-pynq-z2-512x1024": (512, 480), "fcn8s-zcu104-512x1024": (512, 1024)}
    tile = chosen.get(path.parent.name, (256, 256))
    assert card.tile == pkg.tile == tile and card.output_stride == 8
    assert card.net_stride == 32  # not written by these exports: derived from model_config
    assert pkg.geometry == Geometry(tile, 8, 32, 182)
    assert pkg.geometry.default_overlap == 192  # the documented exact overlap of this net
    assert card.palette is not None and len(card.palette) == 7
    assert card.source_sha256 == pkg.model_card["source_checkpoint"]["sha256"]
    # the stored JSON round-trips; the only addition is the derived net_stride
    assert card.to_json() == {**pkg.model_card, "net_stride": 32}


def test_shipped_classifier_card_is_a_sliding_window() -> None:
    """The converted classifier: a 224 px window every 32 px, 6x6 cells on its 384 px tile."""
    pkg = load_package(SHIPPED_CLASSIFIER)
    card = pkg.card
    assert card.task == "classification" and card.window == card.receptive_field == 224
    assert card.tile == (384, 384) and card.output_stride == card.net_stride == 32
    assert pkg.output["shape"] == [1, 6, 6, card.num_classes]
    assert card.to_json() == pkg.model_card


def test_full_card_round_trips_and_keeps_unknown_keys() -> None:
    card = ModelCard.from_json(FULL)
    assert card.tile == (64, 96) and card.palette == ((0, 0, 0), (128, 0, 0))
    assert card.output_scale == (0.5, 0.25) and card.quantized is True
    assert dict(card.extra) == {
        "input": FULL["input"],
        "metrics": {"mean_iu": 0.7},
        "export_seconds": 1.5,
    }
    assert card.to_json() == FULL
    assert ModelCard.from_json(json.loads(json.dumps(card.to_json()))) == card


def test_defaults_of_a_minimal_card() -> None:
    card = ModelCard.from_json(MINIMAL)
    assert card.classes == ("bg", "fg") and card.output_stride == 8
    for key in ("tile", "net_stride", "receptive_field", "palette", "output_scale", "arch"):
        assert getattr(card, key) is None
    assert card.to_json() == MINIMAL
    assert ModelCard.from_json({**MINIMAL, "receptive_field": None}).receptive_field is None


def test_net_stride_written_wins_over_the_derived_one() -> None:
    legacy = {**MINIMAL, "model_config": {"depths": [1, 1, 1]}}
    assert ModelCard.from_json(legacy).net_stride == 8
    assert ModelCard.from_json({**legacy, "net_stride": 16}).net_stride == 16


@pytest.mark.parametrize("key", ["classes", "output_stride"])
def test_missing_required_key_is_named(key: str) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != key}
    assert f"lacks {key!r}" in _one_line_error(data)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("classes", [], "a non-empty list of names"),
        ("classes", ["bg", 3], "a list of non-empty strings"),
        ("classes", ["bg", "a\nb"], "printable names of at most 200 characters"),
        ("classes", ["bg", "\ud800"], "printable names of at most 200 characters"),
        ("classes", ["bg", "x" * 201], "printable names of at most 200 characters"),
        ("classes", "bg,fg", "a non-empty list of names"),
        ("output_stride", 0, "a positive integer"),
        ("output_stride", "8", "a positive integer"),
        ("output_stride", True, "a positive integer"),
        ("tile", [64], "[height, width] in pixels"),
        ("tile", [64, 0], "[height, width] in pixels"),
        ("tile", [64.0, 64], "[height, width] in pixels"),
        ("net_stride", -32, "a positive integer"),
        ("receptive_field", 0, "a positive integer"),
        ("palette", [[0, 0, 0], [256, 0, 0]], "[r, g, b] colours (0..255)"),
        ("palette", [[0, 0], [1, 1]], "[r, g, b] colours (0..255)"),
        ("output_scale", [0.5, float("nan")], "finite numbers"),
        ("output_bias", [], "finite numbers"),
        ("arch", 8, "a string"),
        ("quantized", "yes", "true or false"),
        ("model_config", [1, 2], "an object"),
        ("source_checkpoint", "abc", "an object"),
        ("task", "detection", "'segmentation' or 'classification'"),
        ("task", ["classification"], "'segmentation' or 'classification'"),
        ("window", 0, "a positive integer"),
        ("window", 22.5, "a positive integer"),
    ],
)
def test_malformed_key_is_named_in_one_line(key: str, value: Any, expected: str) -> None:
    message = _one_line_error({**MINIMAL, key: value})
    assert f"model card key {key!r} must be " in message and expected in message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"palette": [[0, 0, 0]]}, "'palette' has 1 colours for 2 classes"),
        ({"output_scale": [1.0, 2.0, 3.0]}, "'output_scale' has 3 entries, expected 1 or 2"),
        ({"net_stride": 12}, "'net_stride' (12) must be a multiple of 'output_stride' (8)"),
        ({"format": "other-model/2"}, "format 'other-model/2' is not 'fcnseg-model/1'"),
    ],
)
def test_inconsistent_cards_are_refused(change: dict[str, Any], fragment: str) -> None:
    assert fragment in _one_line_error({**MINIMAL, **change})


#: the smallest classification card: a 224-input classifier slid at stride 32
CLASSIFIER = {**MINIMAL, "task": "classification", "window": 224, "output_stride": 32}


def test_task_defaults_to_segmentation_and_is_written_only_when_not_the_default() -> None:
    assert ModelCard.from_json(MINIMAL).task == "segmentation"
    assert ModelCard.from_json(MINIMAL).window is None
    # the redundant default is not written back: old cards round-trip unchanged
    assert ModelCard.from_json({**MINIMAL, "task": "segmentation"}).to_json() == MINIMAL
    card = ModelCard.from_json(CLASSIFIER)
    assert card.task == "classification" and card.window == 224
    assert card.to_json() == CLASSIFIER
    assert ModelCard.from_json(json.loads(json.dumps(card.to_json()))) == card


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"window": None}, "of task 'classification' lacks 'window'"),
        ({"task": "segmentation"}, "key 'window' is only for task 'classification'"),
        ({"net_stride": 256}, "'window' (224) must be at least 'net_stride' (256)"),
        ({"tile": [384, 200]}, "'window' (224) must be at most the side of 'tile' ([384, 200])"),
        ({"receptive_field": 225}, "'window' (224) must be at least 'receptive_field' (225)"),
    ],
)
def test_window_rules(change: dict[str, Any], fragment: str) -> None:
    assert fragment in _one_line_error({**CLASSIFIER, **change})


@pytest.mark.parametrize(
    "change", [{"net_stride": 224}, {"tile": [224, 384]}, {"receptive_field": 224}]
)
def test_window_bounds_are_inclusive(change: dict[str, Any]) -> None:
    assert ModelCard.from_json({**CLASSIFIER, **change}).window == 224


def test_require_task_names_the_package_and_the_command() -> None:
    ModelCard.from_json(MINIMAL).require_task("segmentation")
    with pytest.raises(UserError) as info:
        ModelCard.from_json(CLASSIFIER).require_task("segmentation", "package P")
    assert str(info.value) == (
        "package P is a classification package, not a segmentation one; use `fcnseg classify` "
        "with it, or give a segmentation package"
    )
    with pytest.raises(UserError, match="use `fcnseg segment` with it"):
        ModelCard.from_json(MINIMAL).require_task("classification")


def test_not_an_object() -> None:
    assert "not a JSON object" in _one_line_error(["classes"])


def test_geometry_is_the_one_constructor() -> None:
    card = ModelCard.from_json(FULL)
    assert card.geometry() == Geometry((64, 96), 8, 32, 100)
    assert card.geometry(net_stride=16) == Geometry((64, 96), 8, 16, 100)
    with pytest.raises(UserError, match="lacks 'tile'"):
        ModelCard.from_json(MINIMAL).geometry()
    with pytest.raises(UserError, match="lacks 'net_stride'"):
        ModelCard.from_json({**MINIMAL, "tile": [64, 64]}).geometry()
    with pytest.raises(UserError, match=r"tile \(64, 96\) must be a positive multiple of 64"):
        card.geometry(net_stride=64)  # 96 px is no multiple of 64
    assert ModelCard.from_json({**MINIMAL, "tile": [64, 64]}).geometry(32).receptive_field is None


def test_replace_validates_and_without_output_affine_drops_scale_and_bias() -> None:
    card = ModelCard.from_json(FULL)
    assert card.replace(tile=[32, 32]).tile == (32, 32)
    with pytest.raises(UserError, match="'tile'"):
        card.replace(tile=[0, 32])
    stored = card.without_output_affine().to_json()
    assert "output_scale" not in stored and "output_bias" not in stored


def test_load_gives_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    with pytest.raises(UserError, match="model.json not found: give the folder written by"):
        ModelCard.load(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="unreadable model card"):
        ModelCard.load(path)
    path.write_text(json.dumps({**FULL, "tile": "big"}))
    with pytest.raises(UserError, match=f"^{path}: model card key 'tile'"):
        ModelCard.load(path)
    path.write_text(json.dumps(FULL))
    assert ModelCard.load(path) == ModelCard.from_json(FULL)


@pytest.fixture()
def tampered(tmp_path: Path) -> Path:
    """A copy of a shipped package whose card says output_stride "eight", re-hashed by a forger
    (so the card checks, not the manifest digest, refuse it)."""
    import shutil

    src = SHIPPED[0].parent
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return tamper(dst, json_edit=lambda meta: meta["model_card"].update(output_stride="eight"))


def test_package_loader_refuses_a_bad_card(tampered: Path) -> None:
    with pytest.raises(UserError, match="model card key 'output_stride' must be a positive"):
        load_package(tampered)


def test_package_loader_refuses_a_card_tile_unlike_the_input(tampered: Path) -> None:
    tamper(
        tampered, json_edit=lambda meta: meta["model_card"].update(output_stride=8, tile=[128, 128])
    )
    with pytest.raises(UserError, match=r"model_card tile \(128, 128\) is not the input's"):
        load_package(tampered)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"output_stride": 16}, "model_card output_stride 16 but the layers give 8"),
        ({"output_stride": 8, "net_stride": 64}, "model_card net_stride 64 but the layers give 32"),
    ],
)
def test_package_loader_refuses_card_strides_unlike_the_layers(
    tampered: Path, change: dict[str, int], fragment: str
) -> None:
    tamper(tampered, json_edit=lambda meta: meta["model_card"].update(change))
    with pytest.raises(UserError, match=fragment):
        load_package(tampered)


def test_segment_cli_says_it_in_one_line(tampered: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30)).save(image)
    argv = ["segment", str(image), "-o", str(tmp_path / "out"), "--package", str(tampered)]
    result = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model card key 'output_stride'" in lines[0]
