"""``fcnseg emulate`` (:mod:`fcnseg.testing.emulate_cli`): the emulated board as a user command.

On the tiny runtime-weights FCN-32s of ``tests/board/data/fcn32s-rw`` (``old``, its swap
``swapped`` and float64 Brevitas of the swapped checkpoint, ``reference.npz``): ``emulate
board-files`` on the old package gives the bitfile; the swapped package carries it (and the
old driver/settings.json), as ``fcnseg swap-weights`` keeps them. ``emulate run -- segment
--backend pynq`` on it writes the swapped words over the old bitfile's and gives the masks and
integer scores of ``segment --backend sim`` byte for byte, which equal Brevitas; without the
writes the old bitfile's weights decide. A non-runtime package (the tiny FCN-8s) runs too, on
the simulator's fabric and on its generated hardware; ``classify``, ``eval`` and ``video`` on
the emulated board give the simulator's reports, confusion matrix and masks. A lost write and a
board fault are one line, exit 2, as are the refusals (no ``--``, another command, no
``--backend pynq``, a real board).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.testing.emulate_cli import CLI_BRIDGE_ADVICE  # noqa: E402

DATA = Path(__file__).parent / "data"
RW = DATA / "fcn32s-rw"


def _fcnseg(args: list[str], capsys) -> tuple[int, str, str]:
    from fcnseg.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fcnseg: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _with_bitfile(package_dir: Path, board_dir: Path, out: Path) -> Path:
    """A copy of ``package_dir`` with ``board_dir``'s bitfile/ and driver/settings.json."""
    from fcnseg.host.package import add_package_files

    shutil.copytree(package_dir, out)
    shared = [
        "driver/settings.json",
        *(f"bitfile/{p.name}" for p in (board_dir / "bitfile").iterdir()),
    ]
    add_package_files(out, {rel: (board_dir / rel).read_bytes() for rel in shared})
    return out


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> dict:
    """``old_board`` (made by ``fcnseg emulate board-files``), ``swapped_board`` (the swapped
    package on that bitfile), the reference tiles as PNGs and their Brevitas scores."""
    from PIL import Image

    from fcnseg.cli import main

    root = tmp_path_factory.mktemp("emulate-cli")
    assert main(["emulate", "board-files", str(RW / "old"), "-o", str(root / "old-board")]) == 0
    ref = np.load(RW / "reference.npz", allow_pickle=False)
    images = []
    for i, pixels in enumerate(ref["pixels"]):
        images.append(root / f"tile{i}.png")
        Image.fromarray(pixels).save(images[-1])
    return {
        "root": root,
        "old_board": root / "old-board",
        "swapped_board": _with_bitfile(RW / "swapped", root / "old-board", root / "swapped-board"),
        "images": images,
        "scores": ref["scores"],
    }


def _segment(capsys, package: Path, images: list[Path], out: Path, backend: str, *pre: str):
    args = [*pre, "segment", *map(str, images), "--package", str(package)]
    return _fcnseg([*args, "--backend", backend, "--scores", "-o", str(out)], capsys)


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _scores(out: Path, image: Path) -> np.ndarray:
    return np.load(out / f"{image.stem}_scores.npz", allow_pickle=False)["scores"]


def test_board_files_is_a_verified_copy_with_a_stand_in_bitfile(boards, capsys, tmp_path) -> None:
    from fcnseg.host.package import load_package
    from fcnseg.testing.emulated_zynq import BITSTREAM_MAGIC

    code, out, err = _fcnseg(
        ["emulate", "board-files", str(RW / "old"), "-o", str(tmp_path / "b")], capsys
    )
    assert code == 0, err
    assert len(out.splitlines()) == 1 and "emulator stand-in that no real board" in out
    board = load_package(tmp_path / "b")  # every sha256 checked
    old = load_package(RW / "old")
    for rel in old.meta["files"]:  # the package's own files, byte for byte
        assert board.file(rel).read_bytes() == old.file(rel).read_bytes(), rel
    assert board.file("bitfile/finn-accel.bit").read_bytes().startswith(BITSTREAM_MAGIC)
    assert board.file("bitfile/finn-accel.hwh").is_file()
    assert board.file("driver/settings.json").is_file()
    # the same again: the output exists
    code, _, err = _fcnseg(
        ["emulate", "board-files", str(RW / "old"), "-o", str(tmp_path / "b")], capsys
    )
    assert code == 2 and "exists" in _one_error_line(err)


def test_board_files_refuses_a_package_with_a_real_bitfile(boards, capsys, tmp_path) -> None:
    from fcnseg.host.package import add_package_files

    real = tmp_path / "real"
    shutil.copytree(RW / "old", real)
    add_package_files(real, {"bitfile/top.bit": b"\x00\x09\x0f\xf0 a Vivado bitstream"})
    code, _, err = _fcnseg(["emulate", "board-files", str(real), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and "has a real bitfile" in _one_error_line(err)
    assert not (tmp_path / "b").exists()


def test_a_swapped_package_on_the_emulated_old_bitfile_equals_the_simulator(
    boards, capsys, tmp_path
) -> None:
    from fcnseg.host.package import load_package

    swapped, images = boards["swapped_board"], boards["images"]
    code, out, err = _segment(
        capsys, swapped, images, tmp_path / "A", "pynq", "emulate", "run", "--"
    )
    assert code == 0, err
    record = load_package(swapped).meta["runtime_weights"]
    words = sum(int(e["words"]) for e in record["layers"])
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("emulated board: ")
    assert f"{words} runtime-weight words written, {words} read back, 0 faults" in summary
    code, _, err = _segment(capsys, swapped, images, tmp_path / "B", "sim")
    assert code == 0, err
    assert _outputs(tmp_path / "A") == _outputs(tmp_path / "B")  # masks and scores, byte for byte
    for image, brevitas in zip(images, boards["scores"], strict=True):
        np.testing.assert_array_equal(_scores(tmp_path / "A", image), brevitas)
    # the old bitfile's simulator computes something else: the equality above could fail
    code, _, err = _segment(capsys, boards["old_board"], images, tmp_path / "C", "sim")
    assert code == 0, err
    assert any(
        not np.array_equal(_scores(tmp_path / "C", image), brevitas)
        for image, brevitas in zip(images, boards["scores"], strict=True)
    )


def test_without_the_writes_the_bitfile_s_old_weights_decide(
    boards, capsys, tmp_path, monkeypatch
) -> None:
    """The fabric is made from the swapped package (the one holding the bitfile), yet its
    memories start with the stand-in bitstream's words: the old checkpoint's."""
    from fcnseg.host.backends.pynq import PynqEngine

    monkeypatch.setattr(PynqEngine, "load_runtime_weights", lambda self, flush=True: None)
    images = boards["images"]
    code, out, err = _segment(
        capsys, boards["swapped_board"], images, tmp_path / "A", "pynq", "emulate", "run", "--"
    )
    assert code == 0, err
    assert "0 runtime-weight words written" in out
    code, _, err = _segment(capsys, boards["old_board"], images, tmp_path / "B", "sim")
    assert code == 0, err
    for image in images:
        np.testing.assert_array_equal(
            _scores(tmp_path / "A", image), _scores(tmp_path / "B", image)
        )


def test_a_board_that_loses_writes_is_one_line_exit_2(
    boards, capsys, tmp_path, monkeypatch
) -> None:
    from fcnseg.host.backends.pynq import read_words
    from fcnseg.host.package import load_package
    from fcnseg.testing import emulated_zynq as ez

    board = load_package(boards["swapped_board"])
    entry = board.meta["runtime_weights"]["layers"][3]
    new, old = (read_words(p.file(entry["file"])) for p in (board, load_package(RW / "old")))
    k = int(np.flatnonzero(new != old)[0])  # a word the swap changes: its loss shows

    class LossyZynq(ez.EmulatedZynq):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.drop_writes.add((entry["instance"], 4 * k))

    monkeypatch.setattr(ez, "EmulatedZynq", LossyZynq)
    code, out, err = _segment(
        capsys, board.path, boards["images"][:1], tmp_path / "A", "pynq", "emulate", "run", "--"
    )
    assert code == 2
    line = _one_error_line(err)
    assert f"writable layer {entry['layer']} does not read back" in line
    assert f"word {k} written 0x{int(new[k]):08X}, read 0x{int(old[k]):08X}" in line
    assert "emulated board:" not in out


def test_a_fault_the_command_did_not_see_is_one_line_exit_2(
    boards, capsys, tmp_path, monkeypatch
) -> None:
    from fcnseg.testing import emulated_zynq as ez

    class FaultyZynq(ez.EmulatedZynq):  # as if a DMA had been started while it ran
        def flush(self, *args) -> None:
            super().flush(*args)
            if not self.faults:
                self.faults.append("idma0 started while running (start ignored)")

    monkeypatch.setattr(ez, "EmulatedZynq", FaultyZynq)
    code, _, err = _segment(
        capsys, boards["old_board"], boards["images"][:1], tmp_path / "A", "pynq",
        "emulate", "run", "--",
    )  # fmt: skip
    assert code == 2
    line = _one_error_line(err)
    assert "emulated board: " in line and "1 faults; the first: idma0 started while" in line


def test_a_package_without_runtime_weights_runs_and_equals_the_simulator(capsys, tmp_path) -> None:
    from PIL import Image

    from fcnseg.host.package import load_package

    tiny = DATA / "fcn8s-tiny"
    code, _, err = _fcnseg(["emulate", "board-files", str(tiny), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    h, w = load_package(tiny).tile
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (h + 5, w + 9, 3), dtype=np.uint8)
    pixels[:4, :4] = 0  # boundary values
    pixels[-4:, -4:] = 255
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    images = [tmp_path / "photo.png"]
    code, out, err = _segment(
        capsys,
        tmp_path / "b",
        images,
        tmp_path / "A",
        "pynq",
        "emulate",
        "run",
        "--fabric-fps",
        "500",
        "--",
    )
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert "0 runtime-weight words written, 0 read back, 0 faults" in summary
    tiles = int(summary.split(" DMA jobs, ")[1].split(" tiles")[0])
    assert tiles >= 2  # the photo is larger than a tile
    code, _, err = _segment(capsys, tmp_path / "b", images, tmp_path / "B", "sim")
    assert code == 0, err
    assert _outputs(tmp_path / "A") == _outputs(tmp_path / "B")


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        (["segment", "x.png", "--backend", "pynq"], "give the command after `--`"),
        (["--"], "no command after `--`"),
        (["--", "train", "--backend", "pynq"], "`train` is not a command that drives a board"),
        (["--", "segment", "x.png"], "give `segment` --backend pynq"),
        (["--", "segment", "x.png", "--backend", "sim"], "got sim"),
        (["--paced", "--fabric-fps", "5", "--", "segment", "x.png", "--backend=pynq"], "not both"),
    ],
)
def test_refusals_are_one_line_exit_2(words, needle, capsys) -> None:
    code, out, err = _fcnseg(["emulate", "run", *words], capsys)
    assert code == 2
    assert needle in _one_error_line(err)
    assert out == ""


def test_it_refuses_to_start_on_a_real_board(boards, capsys, tmp_path, monkeypatch) -> None:
    from fcnseg.testing import emulate_cli

    assert emulate_cli.real_board_signs({}, paths=[str(tmp_path / "none")]) == []
    (tmp_path / "xlnk").touch()
    assert emulate_cli.real_board_signs({}, paths=[str(tmp_path / "xlnk")]) == [
        str(tmp_path / "xlnk")
    ]
    monkeypatch.setenv("BOARD", "Pynq-Z2")
    code, out, err = _segment(
        capsys, boards["old_board"], boards["images"][:1], tmp_path / "A", "pynq",
        "emulate", "run", "--",
    )  # fmt: skip
    assert code == 2
    assert "this is a PYNQ board (BOARD=Pynq-Z2)" in _one_error_line(err)
    assert not (tmp_path / "A").exists()


def test_the_generated_fabric_refuses_a_runtime_weights_package(boards, capsys, tmp_path) -> None:
    code, _, err = _segment(
        capsys, boards["swapped_board"], boards["images"][:1], tmp_path / "A", "pynq",
        "emulate", "run", "--fabric", "generated", "--",
    )  # fmt: skip
    assert code == 2
    assert "--fabric generated computes with the weights the hardware" in _one_error_line(err)


def test_classify_on_the_emulated_board_gives_the_simulator_s_report(capsys, tmp_path) -> None:
    import json

    from fcnseg.host.classify import DEFAULT_PACKAGE

    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("the shipped classifier package is not built")
    board = tmp_path / "board"
    code, _, err = _fcnseg(
        ["emulate", "board-files", str(DEFAULT_PACKAGE), "-o", str(board)], capsys
    )
    assert code == 0, err
    photo = str(DATA.parents[2] / "samples" / "chelsea.jpg")
    reports, outs = {}, {}
    for name, pre in (("pynq", ["emulate", "run", "--"]), ("sim", [])):
        reports[name] = tmp_path / f"{name}.json"
        args = [*pre, "classify", photo, "--top", "3", "--package", str(board)]
        code, outs[name], err = _fcnseg(
            [*args, "--backend", name, "--json", str(reports[name])], capsys
        )
        assert code == 0, err
    assert outs["pynq"].count("  1. ") == 1
    assert outs["pynq"].strip().splitlines()[-1].startswith("emulated board: 1 DMA jobs")
    hw, sim = (json.loads(reports[name].read_text())["images"] for name in ("pynq", "sim"))
    assert hw[0]["status"] == "done" and len(hw[0]["top"]) == 3
    assert hw[0]["top"] == sim[0]["top"] and hw[0]["probabilities"] == sim[0]["probabilities"]


@pytest.mark.slow
def test_the_generated_fabric_runs_a_package_and_equals_the_simulator(
    capsys, tmp_path, hw_build_cache
) -> None:
    """``--fabric generated``: the tiny FCN-8s's generated hardware (HLS in C++ simulation, RTL
    in Verilator; the builds cached) behind the emulated IODMAs. Nodes this machine's
    finn-hlslib cannot build are named: one line without ``--bridge``, in the summary with it."""
    from PIL import Image

    from fcnseg.host.package import load_package

    tiny = DATA / "fcn8s-tiny"
    code, _, err = _fcnseg(["emulate", "board-files", str(tiny), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    h, w = load_package(tiny).tile
    pixels = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels[0, :] = 255  # boundary values
    pixels[-1, :] = 0
    Image.fromarray(pixels).save(tmp_path / "tile.png")
    images = [tmp_path / "tile.png"]
    fabric = ["emulate", "run", "--fabric", "generated", "--cache", str(hw_build_cache)]
    code, out, err = _segment(capsys, tmp_path / "b", images, tmp_path / "A", "pynq", *fabric, "--")
    if code:  # some node cannot be built with this machine's finn-hlslib
        line = _one_error_line(err)
        assert "cannot be built here" in line and line.endswith(CLI_BRIDGE_ADVICE)
        fabric.append("--bridge")
        code, out, err = _segment(
            capsys, tmp_path / "b", images, tmp_path / "A", "pynq", *fabric, "--"
        )
        assert "; simulator-bridged: " in out
    assert code == 0, err
    assert "emulated board: 1 DMA jobs, 1 tiles" in out
    code, _, err = _segment(capsys, tmp_path / "b", images, tmp_path / "B", "sim")
    assert code == 0, err
    assert _outputs(tmp_path / "A") == _outputs(tmp_path / "B")


def test_the_fabric_comes_from_the_package_holding_the_bitfile(boards, tmp_path) -> None:
    from fcnseg.errors import UserError
    from fcnseg.testing import emulated_zynq as ez

    bit = boards["swapped_board"] / "bitfile" / "finn-accel.bit"
    assert ez.bitfile_package(bit).path.resolve() == boards["swapped_board"].resolve()
    loose = tmp_path / "finn-accel.bit"
    shutil.copy(bit, loose)
    with pytest.raises(UserError, match=r"not in a package's bitfile/") as err:
        ez.bitfile_package(loose)
    assert "\n" not in str(err.value)


def test_eval_on_the_emulated_board_gives_the_simulator_s_confusion_matrix(
    capsys, tmp_path
) -> None:
    import json

    from tests.helpers.datasets import classes_package, write_voc

    voc = write_voc(tmp_path / "VOCdevkit" / "VOC2012", {"val": 3})
    package = classes_package(tmp_path / "voc21-pynq-z2", 21)
    board = tmp_path / "board"
    code, _, err = _fcnseg(["emulate", "board-files", str(package), "-o", str(board)], capsys)
    assert code == 0, err
    reports = {}
    for name, pre in (("pynq", ["emulate", "run", "--"]), ("sim", [])):
        reports[name] = tmp_path / f"{name}.json"
        args = [*pre, "eval", "--package", str(board), "--data", f"voc:{voc}", "--split", "val"]
        code, out, err = _fcnseg([*args, "--backend", name, "--json", str(reports[name])], capsys)
        assert code == 0, err
        if name == "pynq":
            assert out.strip().splitlines()[-1].startswith("emulated board: ")
    hw, sim = (json.loads(reports[name].read_text()) for name in ("pynq", "sim"))
    assert np.asarray(hw["confusion"]).sum() > 0
    assert hw["confusion"] == sim["confusion"]


def test_video_on_the_emulated_board_gives_the_simulator_s_masks(boards, capsys, tmp_path) -> None:
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, image in enumerate(boards["images"][:3]):
        Image.open(image).save(frames / f"f{i:03d}.png")
    for name, pre in (("pynq", ["emulate", "run", "--"]), ("sim", [])):
        args = [*pre, "video", str(frames), "--package", str(boards["swapped_board"])]
        code, out, err = _fcnseg(
            [*args, "--backend", name, "--masks", str(tmp_path / name)], capsys
        )
        assert code == 0, err
        if name == "pynq":
            assert "runtime-weight words written" in out.strip().splitlines()[-1]
    masks = _outputs(tmp_path / "pynq")
    assert len(masks) >= 3 and masks == _outputs(tmp_path / "sim")
