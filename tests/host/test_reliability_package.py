"""Issue 9, item 3: damaged or mismatched packages are refused through the CLI, one line, before
any work (no image read, no output folder created).

"Another board": a package records the board it was built for (``accelerator.json`` ``board``).
It is refused when ``--board`` names another board, or when the ``pynq`` backend runs on a PYNQ
image whose ``BOARD`` variable names another one (:func:`fcnseg.host.segmenter.check_board`);
the ``sim`` backend without ``--board`` runs any package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.package import JSON_NAME, NPZ_NAME, load_package, write_package
from tests.helpers.images import image
from tests.helpers.packages import tiny_package
from tests.helpers.tamper import segment_refuses


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(image(20, 24)).save(path)
    return path


def _copy(package_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(package_dir, copy)
    return copy


def test_changed_byte_in_npz(package_dir, photo, tmp_path, capsys) -> None:
    copy = _copy(package_dir, tmp_path)
    data = bytearray((copy / NPZ_NAME).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / NPZ_NAME).write_bytes(bytes(data))
    args = [str(photo), "--package", str(copy)]
    segment_refuses(args, capsys, tmp_path / "out", NPZ_NAME, "damaged")


@pytest.mark.parametrize("name", [NPZ_NAME, "hw_graph.onnx", JSON_NAME])
def test_missing_file(package_dir, photo, tmp_path, capsys, name) -> None:
    copy = _copy(package_dir, tmp_path)
    (copy / name).unlink()
    args = [str(photo), "--package", str(copy)]
    segment_refuses(args, capsys, tmp_path / "out", str(copy))


def test_newer_format_version(package_dir, photo, tmp_path, capsys) -> None:
    copy = _copy(package_dir, tmp_path)
    meta = json.loads((copy / JSON_NAME).read_text())
    meta["format_version"] += 1
    (copy / JSON_NAME).write_text(json.dumps(meta))
    args = [str(photo), "--package", str(copy)]
    segment_refuses(args, capsys, tmp_path / "out", "newer", "upgrade fcnseg")


def test_package_for_another_board(package_dir, photo, tmp_path, capsys, monkeypatch) -> None:
    args = [str(photo), "--package", str(package_dir)]
    segment_refuses([*args, "--board", "zcu104"], capsys, tmp_path / "o1", "pynq-z2", "zcu104")
    # on a PYNQ image the board is known: a ZCU104 refuses a Pynq-Z2 package before pynq loads
    monkeypatch.setenv("BOARD", "ZCU104")
    segment_refuses([*args, "--backend", "pynq"], capsys, tmp_path / "o2", "built for pynq-z2")
    # the right board (spelt as PYNQ spells it) and the simulator are fine
    assert main(["segment", *args, "--board", "Pynq-Z2", "-o", str(tmp_path / "o3")]) == 0
    assert main(["segment", *args, "-o", str(tmp_path / "o4")]) == 0


def _settings(package_dir: Path, oshape: list[int] | None = None) -> dict:
    """driver/settings.json as finn-plus's driver step writes it (the fields the host reads)."""
    pkg = load_package(package_dir)
    ishape, oshape_pkg = pkg.input["shape"], pkg.output["shape"]
    return {
        "driver_information": {
            "driver_type": "FINNDMAOverlay",
            "platform": "zynq-iodma",
            "fclk_mhz": 100.0,
            "io_shape_dict": {
                "idt": [f"DataType['{pkg.input['dtype']}']"],
                "odt": [f"DataType['{pkg.output['dtype']}']"],
                "ishape_normal": [ishape],
                "oshape_normal": [oshape or oshape_pkg],
                "ishape_folded": [[*ishape, 1]],
                "oshape_folded": [[*oshape_pkg, 1]],
                "ishape_packed": [[*ishape, 1]],
                "oshape_packed": [[*oshape_pkg, 2]],
                "num_inputs": 1,
                "num_outputs": 1,
            },
        }
    }


def test_bitfile_settings_disagree_with_package(package_dir, photo, tmp_path, capsys) -> None:
    pkg = load_package(package_dir)
    n, h, w, c = pkg.output["shape"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "top.bit").write_bytes(b"not a real bitstream")
    (scratch / "settings.json").write_text(json.dumps(_settings(package_dir, [n, h, w, c + 1])))
    board = write_package(
        tmp_path / "board-pkg",
        model_card=pkg.model_card,
        io=pkg.meta["io"],
        layers=list(pkg.layers),
        board=pkg.board,
        extra_files={
            "bitfile/top.bit": scratch / "top.bit",
            "driver/settings.json": scratch / "settings.json",
        },
    )
    args = [str(photo), "--package", str(board), "--backend", "pynq"]
    segment_refuses(args, capsys, tmp_path / "out", "oshape_normal", "does not match")


def test_without_bitfile_pynq_says_what_to_do(package_dir, photo, tmp_path, capsys) -> None:
    args = [str(photo), "--package", str(package_dir), "--backend", "pynq"]
    segment_refuses(args, capsys, tmp_path / "out", "without Vivado", "--backend sim")
