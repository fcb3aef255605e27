"""Issue 17: ``fcnseg eval --package P --scheduler A | --local-workers N`` on a Dask cluster
(:mod:`fcnseg.quantize.farm_eval`).

A VOC folder of small images (sizes 12..39 px, so tiles are padded at every edge) and a real
21-class package are scored locally and on a Dask cluster of three worker processes (one thread
and one ``FPGA`` each, on loopback): the confusion matrices are equal integer for integer, and so
are the metrics computed from them. A worker killed with SIGKILL inside an image
(:mod:`tests.helpers.farm` slows the images and says when a worker is inside one) has its chunk
run again elsewhere, and every image is still counted exactly once: the matrix is the local one.
Options that cannot work are one line, exit 2. Runs in both environments (VOC needs no
scikit-image).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")


from fcnseg.cli import main  # noqa: E402
from fcnseg.host.segmenter import Segmenter  # noqa: E402
from fcnseg.quantize.data.voc import VOCSegmentation  # noqa: E402
from fcnseg.quantize.farm_eval import MAX_CHUNK, chunks  # noqa: E402
from fcnseg.quantize.metrics import confusion_matrix  # noqa: E402
from tests.helpers.datasets import classes_package, write_voc  # noqa: E402
from tests.helpers.farm import SlowImages, busy_until, worker_cluster  # noqa: E402

N_IMAGES = 14
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "class_acc", "class_iu", "pixels")


@pytest.fixture(scope="module")
def cluster():
    """Three worker processes, as `dask worker ADDRESS --nthreads 1 --resources FPGA=1` would."""
    with worker_cluster(3) as running:
        yield running


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The package, the VOC folder, and the confusion matrix computed here image by image
    (integers), with a local ``fcnseg eval``'s JSON."""
    root = tmp_path_factory.mktemp("evalfarm")
    package = classes_package(root / "toy21-pynq-z2", 21)
    voc = write_voc(root / "VOC2012", {"val": N_IMAGES})
    expected = _matrix(package, voc, N_IMAGES)
    report = root / "local.json"
    assert main(_args(package, voc, report)) == 0
    return {"package": package, "voc": voc, "expected": expected, "local": _read(report)}


def _matrix(package: Path, voc: Path, count: int) -> np.ndarray:
    """The confusion matrix of the first ``count`` images, image by image here (integers)."""
    seg, data = Segmenter.load(package, backend="sim"), VOCSegmentation(voc, "val")
    expected = np.zeros((21, 21), dtype=np.int64)
    for index in range(count):
        image, label = data[index]
        expected += confusion_matrix(label, seg(image), 21)
    return expected


def _args(package: Path, voc: Path, report: Path, *more: str) -> list[str]:
    args = ["eval", "--package", str(package), "--data", f"voc:{voc}", "--json", str(report)]
    return [*args, *more]


def _read(report: Path) -> dict:
    return json.loads(report.read_text())


def _address(cluster) -> str:
    address = cluster[0].scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    return address


def _same_scores(farm: dict, local: dict) -> None:
    assert farm["images"] == local["images"] == N_IMAGES
    for key in METRICS:  # nan where undefined: compared as JSON writes them
        assert json.dumps(farm[key]) == json.dumps(local[key]), key


def test_the_local_eval_records_the_exact_confusion_matrix(scored) -> None:
    local = scored["local"]
    assert local["confusion"] == scored["expected"].tolist()
    assert local["pixels"] == int(scored["expected"].sum())


def test_a_cluster_eval_equals_a_local_one(cluster, scored, tmp_path: Path, capsys) -> None:
    report = tmp_path / "farm.json"
    args = _args(scored["package"], scored["voc"], report, "--scheduler", _address(cluster))
    assert main(args) == 0
    farm = _read(report)
    assert farm["confusion"] == scored["expected"].tolist()
    _same_scores(farm, scored["local"])
    said = capsys.readouterr()
    shares = [line for line in said.err.splitlines() if line.startswith("fcnseg: worker tcp://")]
    assert shares and sum(int(line.split(": ")[2].split()[0]) for line in shares) == N_IMAGES
    assert f"{N_IMAGES} images" in said.out and "mean IU" in said.out


def test_local_workers_equal_a_local_eval(scored, tmp_path: Path) -> None:
    report = tmp_path / "farm.json"
    args = _args(scored["package"], scored["voc"], report, "--local-workers", "2", "--limit", "5")
    assert main(args) == 0
    farm = _read(report)
    expected = _matrix(scored["package"], scored["voc"], 5)
    assert farm["images"] == 5 and farm["confusion"] == expected.tolist()


def test_a_worker_killed_mid_eval_has_every_image_counted_once(
    cluster, scored, tmp_path: Path
) -> None:
    local, client = cluster
    busy = tmp_path / "busy"
    busy.mkdir()
    client.register_plugin(SlowImages(0.4, str(busy)), name=SlowImages.name)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 3
        report = tmp_path / "farm.json"
        args = _args(scored["package"], scored["voc"], report, "--scheduler", _address(cluster))
        status: list[int] = []
        run = threading.Thread(target=lambda: status.append(main(args)))
        run.start()
        victim = sorted(pids.values())[0]
        deadline, killed = time.time() + 60, False
        started = time.time()
        while time.time() < deadline and not killed:  # inside an image, after some are done
            end = busy_until(busy, victim)
            if time.time() - started > 0.8 and end is not None and end - time.time() > 0.2:
                os.kill(victim, signal.SIGKILL)
                killed = True
            time.sleep(0.01)
        run.join(timeout=120)
        assert killed, "the evaluation ended before a worker could be killed inside an image"
        assert not run.is_alive() and status == [0]
    finally:
        client.unregister_worker_plugin(SlowImages.name)
    farm = _read(report)
    assert farm["confusion"] == scored["expected"].tolist()  # every image counted exactly once
    _same_scores(farm, scored["local"])
    assert victim not in client.run(os.getpid).values()  # the victim is gone (restarted)


def test_an_image_a_worker_cannot_read_is_one_line(cluster, tmp_path: Path, capsys) -> None:
    package = classes_package(tmp_path / "toy21-pynq-z2", 21)
    voc = write_voc(tmp_path / "VOC2012", {"val": 3})
    broken = sorted((voc / "JPEGImages").iterdir())[1]
    broken.write_bytes(b"not a jpeg")
    report = tmp_path / "farm.json"
    assert main(_args(package, voc, report, "--scheduler", _address(cluster))) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "image 1 of the dataset" in line]
    assert str(broken) in line and "(worker tcp://127.0.0.1:" in line
    assert not report.exists()


def test_chunks_cover_every_image_once() -> None:
    for count in (1, 5, 14, 100, 1000):
        for workers in (1, 3):
            ranges = chunks(count, workers)
            assert [i for a, b in ranges for i in range(a, b)] == list(range(count))
            assert max(b - a for a, b in ranges) <= MAX_CHUNK
    assert len(chunks(12, 3)) == 12  # a short split: one image per task, spread over all


@pytest.mark.parametrize(
    ("more", "says"),
    [
        (["--checkpoint", "x.safetensors", "--scheduler", "tcp://127.0.0.1:1"], "--checkpoint"),
        (["--checkpoint", "x.safetensors", "--local-workers", "2"], "scores a --package"),
        (["--local-workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
        (["--tls-cert", "{cert}", "--scheduler", "tcp://127.0.0.1:1"], "only for a tls://"),
        (["--tls-cert", "{cert}"], "only for a tls://"),
        (["--scheduler", "tls://127.0.0.1:1", "--tls-cert", "{cert}"], "needs --tls-ca-file"),
    ],
)
def test_options_that_cannot_work_are_one_line(more, says, tmp_path: Path, capsys) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-")
    args = ["eval", *[word.format(cert=cert) for word in more]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
