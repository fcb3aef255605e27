"""Issue 17: one ``fcnseg segment`` batch on a Dask distributed cluster (:mod:`fcnseg.host.farm`).

One ``LocalCluster`` of three worker processes (one thread and one ``FPGA`` each, on loopback) is
shared by the module; the batches join it with ``--scheduler`` (the path of a real cluster), and
one test runs ``--local-workers 2`` in a subprocess (the path that starts its own cluster) and
interrupts it. What is asserted does not depend on timing: the outputs equal a local run's byte
for byte (also for a PPM, segmented in strips by its one task); a bad image fails once with its
line and the others are done; a worker killed with
SIGKILL while it is inside an image (:mod:`tests.helpers.farm` slows the images and says when a
worker is inside one) loses nothing: every image is done exactly once by the summary, no
temporary or claim is left, the outputs equal a local run's, and a re-run skips everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("distributed")

import distributed  # noqa: E402

from fcnseg import atomic  # noqa: E402
from fcnseg.atomic import Owner, this_owner  # noqa: E402
from fcnseg.cli import main  # noqa: E402
from fcnseg.host import claims  # noqa: E402
from fcnseg.host.claims import Claim, Holder, claim_path, try_claim  # noqa: E402
from fcnseg.host.farm import client as farm_client  # noqa: E402
from fcnseg.host.farm import security as farm_security  # noqa: E402
from fcnseg.host.farm import worker as farm_worker  # noqa: E402
from fcnseg.host.farm.worker import (  # noqa: E402
    PLUGIN,
    WRITTEN_SINCE,
    FarmPlugin,
    FarmSpec,
    segment_one,
)
from fcnseg.host.inputs import Job  # noqa: E402
from fcnseg.host.summary import ImageRecord  # noqa: E402
from tests.helpers.farm import SlowImages, busy_until, worker_cluster  # noqa: E402
from tests.helpers.images import image  # noqa: E402
from tests.helpers.packages import tiny_package  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 13  #: images done in the shared batch: 12 PNGs and one PPM (strips)


@pytest.fixture(scope="module")
def cluster():
    """Three worker processes, as `dask worker ADDRESS --nthreads 1 --resources FPGA=1` would."""
    with worker_cluster(3) as running:
        yield running


@pytest.fixture(scope="module")
def batch_in(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny package, a folder of images (one of them not an image) and a local run's
    outputs of it."""
    root = tmp_path_factory.mktemp("farm")
    package = tiny_package(root / "tiny-pynq-z2")
    inputs = root / "in"
    inputs.mkdir()
    for i in range(N_IMAGES - 1):
        Image.fromarray(image(40 + 3 * i, 56, seed=i)).save(inputs / f"img{i:02d}.png")
    rgb = image(90, 70, seed=99)  # a binary PPM is always segmented in strips
    (inputs / "strip.ppm").write_bytes(b"P6\n70 90\n255\n" + rgb.tobytes())
    (inputs / "bad.png").write_bytes(b"not a png at all")
    reference = root / "reference"
    assert main(_args(package, inputs, reference)) == 1  # the bad image
    return {"package": package, "inputs": inputs, "reference": reference}


def _args(package: Path, inputs: Path, out: Path, *more: str) -> list[str]:
    return ["segment", str(inputs), "-o", str(out), "--package", str(package), "--scores"] + [
        "--overlay",
        *more,
    ]


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _hidden(folder: Path) -> list[str]:
    """Temporaries and claims left in ``folder``."""
    return sorted(p.name for p in folder.rglob(".*"))


def _address(cluster) -> str:
    address = cluster[0].scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    return address


def _statuses(summary: dict) -> dict[str, str]:
    return {Path(r["input"]).name: r["status"] for r in summary["images"]}


def test_farm_outputs_equal_a_local_run_and_a_bad_image_fails_once(
    cluster, batch_in, tmp_path: Path, capsys
) -> None:
    out, report = tmp_path / "out", tmp_path / "summary.json"
    args = _args(batch_in["package"], batch_in["inputs"], out, "--json", str(report))
    assert main([*args, "--scheduler", _address(cluster)]) == 1
    assert _outputs(out) == _outputs(batch_in["reference"])
    assert _hidden(out) == []
    summary = json.loads(report.read_text())
    assert summary["counts"]["done"] == N_IMAGES and summary["counts"]["failed"] == 1
    (bad,) = [r for r in summary["images"] if r["status"] == "failed"]
    assert Path(bad["input"]).name == "bad.png"
    assert "not an image Pillow can read" in bad["message"] and "(worker tcp://" in bad["message"]
    workers = {r["worker"] for r in summary["images"]}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    said = capsys.readouterr()
    stdout = said.out
    assert stdout.count("failed: ") == 1 and f"segmented {N_IMAGES} image(s)" in stdout
    shares = [line for line in said.err.splitlines() if line.startswith("fcnseg: worker tcp://")]
    assert sum(int(line.split(": ")[2].split()[0]) for line in shares) == N_IMAGES, said.err
    assert len(shares) == len(workers & {r["worker"] for r in summary["images"] if r["size"]})

    assert main([*args, "--scheduler", _address(cluster)]) == 1  # a re-run skips what exists
    again = json.loads(report.read_text())
    assert again["counts"]["skipped"] == N_IMAGES and again["counts"]["done"] == 0
    assert again["counts"]["failed"] == 1
    assert _outputs(out) == _outputs(batch_in["reference"])


def test_a_worker_killed_mid_batch_loses_nothing(cluster, batch_in, tmp_path: Path) -> None:
    local, client = cluster
    busy = tmp_path / "busy"
    busy.mkdir()
    client.register_plugin(SlowImages(0.6, str(busy)), name=SlowImages.name)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 3
        out, report = tmp_path / "out", tmp_path / "summary.json"
        args = _args(batch_in["package"], batch_in["inputs"], out, "--json", str(report))
        status: list[int] = []
        run = threading.Thread(
            target=lambda: status.append(main([*args, "--scheduler", _address(cluster)]))
        )
        run.start()
        victim = sorted(pids.values())[0]
        deadline = time.time() + 60
        killed = False
        while time.time() < deadline and not killed:  # inside an image, after some are done
            end = busy_until(busy, victim)
            masks = len(list(out.glob("img*.png"))) if out.is_dir() else 0
            if masks >= 3 and end is not None and end - time.time() > 0.3:
                os.kill(victim, signal.SIGKILL)
                killed = True
            time.sleep(0.01)
        run.join(timeout=120)
        assert killed, "the batch ended before a worker could be killed inside an image"
        assert not run.is_alive() and status == [1]  # 1: the bad image
    finally:
        client.unregister_worker_plugin(SlowImages.name)
    summary = json.loads(report.read_text())
    names = sorted(Path(r["input"]).name for r in summary["images"])
    assert names == sorted(p.name for p in batch_in["inputs"].iterdir())  # each image once
    others = [(r["input"], r["status"], r["message"]) for r in summary["images"]]
    others = [o for o in others if o[1] != "done" and not o[0].endswith("bad.png")]
    assert summary["counts"]["done"] == N_IMAGES and summary["counts"]["failed"] == 1, others
    assert _outputs(out) == _outputs(batch_in["reference"])
    assert _hidden(out) == [], "a temporary or a claim was left behind"
    assert victim not in client.run(os.getpid).values()  # the victim is gone (restarted)

    assert main([*args, "--scheduler", _address(cluster)]) == 1
    again = json.loads(report.read_text())
    assert again["counts"]["skipped"] == N_IMAGES and again["counts"]["done"] == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_worker_not_yet_reaped_has_its_claim_broken(tmp_path: Path) -> None:
    """A worker killed with SIGKILL is a zombie until its nanny reaps it, and its image is
    retried in that window: the zombie's claim must count as a dead run's."""
    target = tmp_path / "a.png"
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    start = atomic.process_start(child.pid)
    claim_path(target).write_text(Owner(this_owner().host, child.pid, start).tag + "\n")
    assert isinstance(try_claim(target), Holder)  # alive: held
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while atomic.process_start(child.pid) is not None and time.time() < deadline:
        time.sleep(0.01)  # until it is a zombie: nobody has waited for it
    assert Path(f"/proc/{child.pid}").exists(), "the child was reaped too early for this test"
    mine = try_claim(target)
    assert isinstance(mine, Claim) and mine.path.read_text().strip() == this_owner().tag
    child.wait()


def _spec(batch_in, out: Path, **changes) -> FarmSpec:
    fields = dict(package=str(batch_in["package"]), backend="sim", out_dir=str(out))
    return FarmSpec(**{**fields, **changes}, batch_options={"scores": True}, started=time.time())


def _one_task(client, spec: FarmSpec, source: Path, out_stem: str) -> ImageRecord:
    """Run one image's task directly with ``spec`` on the cluster; its record."""
    client.register_plugin(FarmPlugin(spec), name=PLUGIN)
    try:
        job = Job(source, Path(out_stem))
        future = client.submit(segment_one, job, ImageRecord(str(source)), resources={"FPGA": 1})
        return future.result(timeout=60).record
    finally:
        client.unregister_worker_plugin(PLUGIN)


def test_a_worker_that_cannot_write_the_output_folder_says_so(
    cluster, batch_in, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    source = batch_in["inputs"] / "img00.png"
    record = _one_task(cluster[1], _spec(batch_in, blocker / "out"), source, "img00")
    assert record.status == "failed" and record.worker.startswith("tcp://127.0.0.1:")
    assert str(source) in record.message and "cannot claim" in record.message
    assert record.message.endswith(f"(worker {record.worker})") and "\n" not in record.message


def test_a_worker_that_cannot_open_the_package_says_so(cluster, batch_in, tmp_path: Path) -> None:
    source = batch_in["inputs"] / "img01.png"
    missing = tmp_path / "no-package"
    record = _one_task(cluster[1], _spec(batch_in, tmp_path, package=str(missing)), source, "a")
    assert record.status == "failed" and f"worker {record.worker}" in record.message
    assert str(missing) in record.message and "\n" not in record.message
    assert not (tmp_path / "a.png").exists()


def test_a_claim_left_on_another_host_is_waited_out_then_taken(
    cluster, batch_in, tmp_path: Path
) -> None:
    """A worker on another host died holding the image (its heartbeat stopped): the task looks
    again until the claim is stale by the folder's clock, then segments the image. A live
    holder on this host is not waited for."""
    source = batch_in["inputs"] / "img03.png"
    elsewhere = Owner("x" + this_owner().host[:79], 4242, 17)
    claim = claim_path(tmp_path / "c.png")
    claim.write_text(elsewhere.tag + "\n")
    stamp = claims.folder_now(tmp_path) - (claims.CLAIM_STALE_SECONDS - 2)
    os.utime(claim, (stamp, stamp))  # two seconds of heartbeat left
    began = time.monotonic()
    record = _one_task(cluster[1], _spec(batch_in, tmp_path), source, "c")
    assert record.status == "done", record.message
    assert time.monotonic() - began >= 1.5  # it waited for the heartbeat to run out
    assert (tmp_path / "c.png").is_file() and not claim.exists()

    mine = try_claim(tmp_path / "d.png")  # this process: alive, on the workers' host
    began = time.monotonic()
    record = _one_task(cluster[1], _spec(batch_in, tmp_path), source, "d")
    mine.release()
    assert record.status == "another-run" and "being segmented by another run" in record.message
    assert time.monotonic() - began < farm_worker.CLAIM_POLL_S


def test_an_image_whose_result_died_with_its_worker_counts_as_done(
    cluster, batch_in, tmp_path: Path
) -> None:
    """The worker wrote the image and died before the client fetched the result: Dask runs the
    task again, which finds the mask (``another-run``); the client takes the first attempt's
    record from the scheduler's event instead, so the image counts as done once."""
    client = cluster[1]
    source = batch_in["inputs"] / "img02.png"
    client.register_plugin(FarmPlugin(_spec(batch_in, tmp_path)), name=PLUGIN)
    try:
        key = f"fcnseg-test-{time.time_ns()}"
        first = client.submit(segment_one, Job(source, Path("b")), ImageRecord(str(source)),
                              key=key, resources={"FPGA": 1}).result(timeout=60).record  # fmt: skip
        again = client.submit(segment_one, Job(source, Path("b")), ImageRecord(str(source)),
                              resources={"FPGA": 1}).result(timeout=60).record  # fmt: skip
    finally:
        client.unregister_worker_plugin(PLUGIN)
    assert first.status == "done" and again.status == "another-run"
    assert again.message == WRITTEN_SINCE
    assert farm_client.recorded_done(client, key, again)
    assert again.status == "done" and again.message is None
    assert again.size == first.size and again.worker == first.worker
    assert again.histogram.tolist() == first.histogram.tolist()
    stranger = ImageRecord(str(source), "another-run", WRITTEN_SINCE)
    assert not farm_client.recorded_done(client, "fcnseg-no-such-task", stranger)
    assert stranger.status == "another-run"


def test_a_local_cluster_listens_on_loopback_only() -> None:
    """``--local-workers``: the scheduler, nannies and workers (and their HTTP servers) bind to
    127.0.0.1, never to a public interface."""
    psutil = pytest.importorskip("psutil")
    with farm_client.connect(2, None, print) as client:
        pids = {os.getpid(), *client.run(os.getpid).values()}
        listening = [
            (pid, conn.laddr.ip)
            for pid in pids
            for conn in psutil.Process(pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        ]
    assert {pid for pid, _ in listening} == pids  # the scheduler here, and each worker
    assert {ip for _, ip in listening} == {"127.0.0.1"}, listening


def test_a_cluster_without_an_fpga_worker_is_refused(batch_in, tmp_path, capsys, monkeypatch):
    """Workers started without ``--resources FPGA=1`` would never get a task: refused in one
    line; so is a cluster no worker joins."""
    args = _args(batch_in["package"], batch_in["inputs"], tmp_path / "out")
    for workers, said in ((1, "no worker has the FPGA resource"), (0, "no worker joined")):
        monkeypatch.setattr(farm_client, "WORKER_WAIT_S", 30.0 if workers else 1.0)
        plain = distributed.LocalCluster(
            n_workers=workers,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
        with plain:
            assert main([*args, "--scheduler", plain.scheduler_address]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert said in err[-1] and err[-1].startswith("fcnseg: error: --scheduler tcp://")
    assert not list((tmp_path / "out").glob("*.png"))


def test_each_workers_share_and_rate() -> None:
    def record(worker: str | None, status: str, seconds: float) -> ImageRecord:
        return ImageRecord("x", status, worker=worker, seconds=seconds)

    records = [record("tcp://h:1", "done", 0.5), record("tcp://h:1", "done", 1.5)]
    records += [record("tcp://h:2", "done", 1.0), record("tcp://h:2", "failed", 9.0)]
    records += [record(None, "skipped", 0.0), record("tcp://h:3", "another-run", 1.0)]
    assert farm_client.shares(records) == [
        "fcnseg: worker tcp://h:1: 2 image(s) (67%), 1.00 img/s busy",
        "fcnseg: worker tcp://h:2: 1 image(s) (33%), 1.00 img/s busy",
    ]
    assert farm_client.shares([record(None, "skipped", 0.0)]) == []


def test_plain_tcp_off_loopback_is_warned_about() -> None:
    said: list[str] = []
    for address in ("tcp://127.0.0.1:8786", "localhost:8786", "tls://10.0.0.5:8786"):
        farm_security.warn_if_open(address, said.append)
    assert said == []
    farm_security.warn_if_open("tcp://192.168.1.20:8786", said.append)
    farm_security.warn_if_open("10.0.0.5:8786", said.append)
    assert len(said) == 2 and all("trusted network" in line for line in said)


def test_local_workers_and_scheduler_exclude_each_other(batch_in, tmp_path: Path, capsys) -> None:
    args = _args(batch_in["package"], batch_in["inputs"], tmp_path / "out")
    assert main([*args, "--local-workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_local_workers_interrupted_leaves_complete_outputs(batch_in, tmp_path: Path) -> None:
    """``--local-workers 2`` in its own process group, Ctrl-C (SIGINT to the group, as a
    terminal sends it) once some images are written: exit 130 without a traceback from any
    worker, every mask there has all its outputs, equal to a local run's, and the summary's
    ``done`` images are among them; a re-run finishes the batch."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(24):
        Image.fromarray(image(200, 200, seed=i)).save(inputs / f"big{i:02d}.png")
    reference = tmp_path / "reference"
    assert main(_args(batch_in["package"], inputs, reference)) == 0
    expected = _outputs(reference)
    out, report = tmp_path / "out", tmp_path / "summary.json"
    command = [sys.executable, "-m", "fcnseg.cli", *_args(batch_in["package"], inputs, out)]
    command += ["--local-workers", "2", "--json", str(report)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(
        command, stdout=-1, stderr=-1, text=True, env=env, cwd=ROOT, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("big*.png"))) < 4:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the workers too
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "interrupted after" in stderr and "Traceback" not in stderr, stderr
    summary = json.loads(report.read_text())
    assert summary["interrupted"] is True
    assert summary["counts"]["done"] < 24, "the batch ended before it was interrupted"
    got = _outputs(out)
    masks = [name for name in got if name.endswith(".png") and "_overlay" not in name]
    assert len(masks) >= 4
    for name in masks:  # a mask is there only with its overlay and scores, all complete
        stem = name[: -len(".png")]
        for part in (name, f"{stem}_overlay.jpg", f"{stem}_scores.npz"):
            assert got.get(part) == expected[part], part
    assert set(got) <= set(expected)
    done = [Path(r["outputs"]["mask"]).name for r in summary["images"] if r["status"] == "done"]
    assert set(done) <= set(masks)

    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert _outputs(out) == expected
    assert _hidden(out) == []  # the killed workers' temporaries and claims are gone
