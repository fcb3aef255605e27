"""The shipped Pascal VOC and Cityscapes training configs, and the README's path on real data.

No real dataset is available offline, so the folders here are *generated* in each dataset's exact
layout (file names, folders, split lists, label encodings: VOC's palette PNGs with 255 borders,
Cityscapes' greyscale ``labelIds`` with ids the 19 train ids do not cover). The end-to-end tests
run what the README's "Training on real data" section tells a user to type, from a working
directory holding ``data/VOCdevkit/VOC2012`` or ``data/cityscapes`` as the configs expect, with a
copy of the config whose only changes are the run length (epochs, steps, validation images).

The same writers, at the real image sizes, made the folders the per-epoch times in
``docs/real-data.md`` were measured on (:func:`write_voc_layout`, :func:`write_cityscapes_layout`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.quantize.data.cityscapes import LABEL_TO_TRAIN
from fcnseg.quantize.data.palette import IGNORE_INDEX, voc_palette
from fcnseg.quantize.train_config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "quantize" / "configs"

#: (config file, dataset kind, class count, the folder the config's dataset spec names)
REAL_CONFIGS = {
    "voc-fcn8s.json": ("voc", 21, "data/VOCdevkit/VOC2012"),
    "voc-fcn8s-aug.json": ("voc", 21, "data/VOCdevkit/VOC2012"),
    "cityscapes-fcn8s.json": ("cityscapes", 19, "data/cityscapes"),
}

#: the tile each dataset's export uses in the docs (VOC: Pynq-Z2; Cityscapes: ZCU104/KV260)
EXPORT_TILES = {"voc": (256, 256), "cityscapes": (512, 512)}

#: VOC2012 image sizes (H, W): the long side is 500 px, most images are 500x375 or 375x500.
VOC_SIZES = ((375, 500), (500, 375), (333, 500), (500, 333), (366, 500), (281, 500))

#: Cityscapes frames are 1024x2048.
CITYSCAPES_SIZE = (1024, 2048)

#: label ids a generated Cityscapes frame is drawn with, top to bottom: sky, building, vegetation,
#: road, sidewalk; cars and persons on top; ego vehicle (id 1, not a train id) at the bottom.
_SKY, _BUILDING, _VEGETATION, _ROAD, _SIDEWALK, _CAR, _PERSON, _EGO = 23, 11, 21, 7, 8, 26, 24, 1


def _texture(rng: np.random.Generator, shape: tuple[int, int], colours: np.ndarray, label):
    """An RGB image whose regions have their class's colour, a smooth shading and mild noise.

    Photographs compress to about the size of such images (VOC JPEGs ~100 KB, Cityscapes PNGs
    ~2 MB), so decoding them costs what decoding the real files costs.
    """
    height, width = shape
    shade = np.linspace(0.8, 1.2, width)[None, :] * np.linspace(1.1, 0.9, height)[:, None]
    image = colours[label].astype(np.float32) * shade[..., None]
    image += rng.normal(0.0, 6.0, size=(height, width, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _voc_label(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Background with one to three objects (ellipses or boxes), each outlined by 255 (void)."""
    height, width = shape
    label = np.zeros(shape, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, 21))
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.35) * height, rng.uniform(0.1, 0.35) * width
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            border = ((yy - cy) / (ry + 4)) ** 2 + ((xx - cx) / (rx + 4)) ** 2 <= 1.0
        else:
            inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
            border = (abs(yy - cy) <= ry + 4) & (abs(xx - cx) <= rx + 4)
        label[border & ~inside] = IGNORE_INDEX
        label[inside] = cls
    return label


def write_voc_layout(
    root: Path,
    counts: dict[str, int],
    sizes: tuple[tuple[int, int], ...] = VOC_SIZES,
    seed: int = 0,
) -> Path:
    """Write a VOC2012 folder under ``root``: ``counts[split]`` images per split list.

    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, value = class, 255 =
    void), ``ImageSets/Segmentation/<split>.txt``; ids like ``2007_000032``, unique across splits.
    Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    for part in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / part).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    colours = rng.integers(30, 226, size=(256, 3))
    number = 0
    for split, count in counts.items():
        ids = []
        for _ in range(count):
            number += 1
            name = f"{2007 + number % 6}_{number:06d}"
            shape = sizes[int(rng.integers(len(sizes)))]
            label = _voc_label(rng, shape)
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette.ravel().tolist())
            png.save(root / "SegmentationClass" / f"{name}.png")
            image = Image.fromarray(_texture(rng, shape, colours, label))
            image.save(root / "JPEGImages" / f"{name}.jpg", quality=90)
            ids.append(name)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _cityscapes_label(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A street-like label-id map: sky, buildings, trees, road, sidewalk, cars, people, ego car."""
    height, width = shape
    label = np.empty(shape, dtype=np.uint8)
    bands = np.cumsum(rng.dirichlet([2, 4, 2, 5, 2]) * height).astype(int)
    start = 0
    for label_id, stop in zip((_SKY, _BUILDING, _VEGETATION, _ROAD, _SIDEWALK), bands, strict=True):
        label[start:stop] = label_id
        start = stop
    label[start:] = _SIDEWALK
    horizon = bands[2]
    for label_id, (h, w) in ((_CAR, (0.12, 0.1)), (_CAR, (0.1, 0.08)), (_PERSON, (0.15, 0.02))):
        top = int(min(horizon, height - 1) - rng.uniform(0.3, 0.9) * h * height)
        left = int(rng.uniform(0, 1 - w) * width)
        label[max(0, top) : top + int(h * height), left : left + int(w * width)] = label_id
    label[int(0.9 * height) :] = _EGO
    return label


def write_cityscapes_layout(
    root: Path,
    counts: dict[str, int],
    size: tuple[int, int] = CITYSCAPES_SIZE,
    cities: tuple[str, ...] = ("aachen", "bremen", "zurich"),
    seed: int = 0,
) -> Path:
    """Write a Cityscapes folder under ``root``: ``counts[split]`` frames per split.

    ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (RGB PNG) and
    ``gtFine/<split>/<city>/..._gtFine_labelIds.png`` (8-bit greyscale label ids), frames spread
    over ``cities``. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(256, 3))
    for split, count in counts.items():
        for index in range(count):
            city = cities[index % len(cities)]
            stem = f"{city}_{index:06d}_000019"
            images = root / "leftImg8bit" / split / city
            labels = root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            label = _cityscapes_label(rng, size)
            Image.fromarray(label, mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
            image = _texture(rng, size, colours, label)
            Image.fromarray(image).save(images / f"{stem}_leftImg8bit.png")
    return root


# ------------------------------------------------------------------------------------------------
# The configs themselves
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_config_loads_strictly_and_names_its_dataset(name):
    kind, classes, folder = REAL_CONFIGS[name]
    cfg = TrainConfig.load(CONFIGS / name)
    assert cfg.dataset == f"{kind}:{folder}"
    assert cfg.val_split == "val"  # both datasets publish labels for val only
    assert cfg.quantized and cfg.float_epochs > 0 and cfg.epochs > 0
    assert cfg.model.get("num_classes", classes) == classes
    assert cfg.crop[0] % 32 == 0 and cfg.crop[1] % 32 == 0
    assert cfg.steps_per_epoch is None  # whole epochs over the training split
    # per-epoch validation: VOC's whole val split (1449 small images); the first 100 of
    # Cityscapes' 500 full frames (all 500 cost about 8 CPU-minutes per epoch, docs/real-data.md)
    assert cfg.val_images == (100 if kind == "cityscapes" else None)
    assert cfg.name == name.removesuffix(".json")


def test_every_real_data_config_is_listed_here():
    """A new voc-*/cityscapes-* config gets the checks and the smoke run below."""
    shipped = {
        p.name for pattern in ("voc-*.json", "cityscapes-*.json") for p in CONFIGS.glob(pattern)
    }
    assert shipped == set(REAL_CONFIGS)


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_config_builds_its_model_with_the_dataset_classes(name):
    pytest.importorskip("brevitas")
    from fcnseg.quantize.models import build_model
    from fcnseg.quantize.train import model_config

    kind, classes, _ = REAL_CONFIGS[name]
    cfg = TrainConfig.load(CONFIGS / name)
    mcfg = model_config(cfg, cfg.model, classes)
    assert mcfg.num_classes == classes and mcfg.arch == "fcn8s" and mcfg.weight_bits == 4
    model = build_model(mcfg)
    assert model.score_fr.out_channels == classes


def test_generated_layouts_read_back_through_the_loaders(tmp_path):
    from fcnseg.quantize.data.spec import open_dataset

    voc = write_voc_layout(tmp_path / "VOCdevkit" / "VOC2012", {"train": 3, "val": 2})
    train = open_dataset(f"voc:{tmp_path}", "train")
    image, label = train[0]
    assert len(train) == 3 and image.shape[:2] in VOC_SIZES and label.shape == image.shape[:2]
    assert set(np.unique(label)) <= set(range(21)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in label and (label > 0).any() and (label == 0).any()
    assert len((voc / "ImageSets/Segmentation/val.txt").read_text().split()) == 2

    city = write_cityscapes_layout(tmp_path / "cityscapes", {"val": 2}, size=(64, 128))
    val = open_dataset(f"cityscapes:{city}", "val")
    image, label = val[1]
    assert len(val) == 2 and image.shape == (64, 128, 3)
    train_ids = {LABEL_TO_TRAIN[i] for i in (_SKY, _BUILDING, _VEGETATION, _ROAD, _SIDEWALK)}
    assert train_ids <= set(np.unique(label))
    assert (label[-1] == IGNORE_INDEX).all()  # the ego vehicle is not a train id


# ------------------------------------------------------------------------------------------------
# The README's path on real data, as typed there: train -> export -> eval on val (-> compile)
# ------------------------------------------------------------------------------------------------
#: the run-length flags of a smoke run; the config file itself is the shipped one, unchanged
SMOKE_FLAGS = ["--float-epochs", "1", "--epochs", "1", "--steps-per-epoch", "1", "--threads", "1"]


def _write_layout(name: str) -> None:
    """A small generated dataset where config ``name`` looks for it, with its training split."""
    kind, _, folder = REAL_CONFIGS[name]
    splits = {TrainConfig.load(CONFIGS / name).train_split: 4, "val": 2}
    if kind == "voc":
        write_voc_layout(Path(folder), splits, sizes=((96, 128), (128, 96)))
    else:
        write_cityscapes_layout(Path(folder), splits, size=(128, 256))


def _train_and_export(name: str, tile: tuple[int, int]) -> tuple[Path, Path]:
    """``fcnseg train`` (float twin + QAT, one step each) then ``fcnseg export``; the paths."""
    from fcnseg.cli import main

    kind, classes, folder = REAL_CONFIGS[name]
    stem = name.removesuffix(".json")
    run = Path("runs") / stem
    config = CONFIGS / name
    assert main(["train", "--config", str(config), "-o", str(run), *SMOKE_FLAGS]) == 0
    best = run / "best.safetensors"
    assert best.is_file() and (run / "float" / "best.safetensors").is_file()
    meta = json.loads(best.with_suffix(".json").read_text())
    assert meta["dataset"] == f"{kind}:{folder}" and len(meta["classes"]) == classes
    saved = TrainConfig.load(run / "config.json")
    assert saved.crop == TrainConfig.load(config).crop and saved.steps_per_epoch == 1

    export = Path("build") / f"export-{stem}"
    assert main(["export", str(best), "--tile", *map(str, tile), "-o", str(export)]) == 0
    card = json.loads((export / "model.json").read_text())
    assert len(card["classes"]) == classes and card["tile"] == list(tile)
    assert card["output"]["shape"] == [1, classes, tile[0] // 8, tile[1] // 8]
    assert (export / "model.onnx").is_file()
    return best, export


def _eval_on_val(source: list[str], name: str, metrics: Path) -> dict:
    """``fcnseg eval SOURCE --data KIND:FOLDER`` (split: val, the default for real data)."""
    from fcnseg.cli import main

    kind, classes, folder = REAL_CONFIGS[name]
    assert main(["eval", *source, "--data", f"{kind}:{folder}", "--json", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["split"] == "val" and result["images"] == 2
    assert result["pixels"] > 0 and 0.0 <= result["mean_iu"] <= 1.0
    assert len(result["class_iu"]) == classes
    return result


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_readme_path_trains_exports_and_evaluates_on_val(tmp_path, monkeypatch, name):
    pytest.importorskip("brevitas")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    _write_layout(name)
    best, _ = _train_and_export(name, EXPORT_TILES[REAL_CONFIGS[name][0]])
    _eval_on_val(["--checkpoint", str(best)], name, tmp_path / "val.json")


@pytest.mark.slow
def test_readme_path_compiles_for_pynq_z2_and_scores_the_package_on_val(tmp_path, monkeypatch):
    """The whole path for VOC: the 256x256 export fits a Pynq-Z2 and its package scores val."""
    pytest.importorskip("finn")
    from fcnseg.cli import main

    name = "voc-fcn8s.json"
    monkeypatch.chdir(tmp_path)
    _write_layout(name)
    best, export = _train_and_export(name, (256, 256))
    build = Path("build") / "voc-fcn8s-pynq-z2"
    assert main(["compile", str(export), "--board", "pynq-z2", "-o", str(build)]) == 0
    package = build / "package"
    card = json.loads((package / "accelerator.json").read_text())
    assert card["board"] == "pynq-z2" and len(card["model_card"]["classes"]) == 21
    checkpoint = _eval_on_val(["--checkpoint", str(best)], name, tmp_path / "ckpt.json")
    packaged = _eval_on_val(["--package", str(package)], name, tmp_path / "package.json")
    # the package computes the checkpoint's integer scores; labels differ at most on near-ties
    assert abs(packaged["pixel_acc"] - checkpoint["pixel_acc"]) < 0.01
