"""Issue 17, security: a farm's client reaches a ``tls://`` scheduler only with certificates
from the cluster's CA (:mod:`fcnseg.host.farm.security`).

A CA and one certificate for 127.0.0.1 are made with the ``openssl`` command; a one-worker
``LocalCluster`` on ``tls://127.0.0.1`` requires encryption. With the CA, certificate and key the
batch runs and its outputs equal a local run's; without them it is refused before anything is
written (one line, exit 2); with a certificate of another CA the handshake fails (one line,
exit 2); TLS options with a ``tcp://`` scheduler or ``--local-workers`` are refused.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("distributed")
if shutil.which("openssl") is None:
    pytest.skip("needs the openssl command to make test certificates", allow_module_level=True)

import distributed  # noqa: E402
from distributed.security import Security  # noqa: E402

from fcnseg.cli import main  # noqa: E402
from fcnseg.errors import UserError  # noqa: E402
from fcnseg.host.farm import client as farm_client  # noqa: E402
from fcnseg.host.farm.security import client_security  # noqa: E402
from tests.helpers.images import image  # noqa: E402
from tests.helpers.packages import tiny_package  # noqa: E402


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _authority(folder: Path) -> dict[str, Path]:
    """A CA, and a certificate + key for 127.0.0.1 signed by it, in ``folder``."""
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=fcnseg test CA", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "node.pem", "-days", "2", "-extfile", "san.cnf",
             cwd=folder)  # fmt: skip
    return {"ca": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node.key"}


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tls")
    ours, theirs = _authority(root / "ours"), _authority(root / "theirs")
    ca, cert, key = (str(ours[k]) for k in ("ca", "cert", "key"))
    security = Security(
        tls_ca_file=ca,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        tls_client_cert=cert,
        tls_client_key=key,
        require_encryption=True,
    )
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        resources={"FPGA": 1},
        protocol="tls://",
        host="127.0.0.1",
        security=security,
        dashboard_address="127.0.0.1:0",
        silence_logs=50,
    )
    with cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        yield cluster.scheduler_address, ours, theirs


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tls-batch")
    inputs = root / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(image(40 + 8 * i, 48, seed=i)).save(inputs / f"img{i}.png")
    return {"package": tiny_package(root / "tiny-pynq-z2"), "inputs": inputs}


def _args(batch: dict[str, Path], out: Path) -> list[str]:
    return ["segment", str(batch["inputs"]), "-o", str(out), "--package", str(batch["package"])]


def _tls(files: dict[str, Path]) -> list[str]:
    return ["--tls-ca-file", str(files["ca"]), "--tls-cert", str(files["cert"]),
            "--tls-key", str(files["key"])]  # fmt: skip


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_tls_with_the_clusters_certificates_runs_the_batch(tls_cluster, batch, tmp_path, capsys):
    address, ours, _ = tls_cluster
    assert main(_args(batch, tmp_path / "reference")) == 0
    out = tmp_path / "out"
    assert main([*_args(batch, out), "--scheduler", address, *_tls(ours)]) == 0
    assert _outputs(out) == _outputs(tmp_path / "reference")
    assert "warning" not in capsys.readouterr().err


def test_tls_without_certificates_is_refused_before_any_output(tls_cluster, batch, tmp_path,
                                                               capsys) -> None:  # fmt: skip
    address, ours, _ = tls_cluster
    out = tmp_path / "out"
    assert main([*_args(batch, out), "--scheduler", address]) == 2
    err = capsys.readouterr().err.strip()
    assert "tls:// needs --tls-ca-file, --tls-cert and --tls-key" in err and "\n" not in err
    assert main([*_args(batch, out), "--scheduler", address, *_tls(ours)[:2]]) == 2
    assert not out.exists()


def test_a_certificate_of_another_ca_cannot_connect(tls_cluster, batch, tmp_path, capsys,
                                                    monkeypatch) -> None:  # fmt: skip
    address, _, theirs = tls_cluster
    monkeypatch.setattr(farm_client, "CONNECT_S", 3.0)
    assert main([*_args(batch, tmp_path / "out"), "--scheduler", address, *_tls(theirs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"fcnseg: error: --scheduler {address}: cannot connect")
    assert not list((tmp_path / "out").glob("*.png"))


def test_tls_options_belong_to_a_tls_scheduler(tmp_path: Path) -> None:
    files = [str(tmp_path / name) for name in ("ca.pem", "c.pem", "c.key")]
    assert client_security("tcp://127.0.0.1:8786", None, None, None) is None
    for address in ("tcp://127.0.0.1:8786", "127.0.0.1:8786", None):
        with pytest.raises(UserError, match="only for a tls:// scheduler"):
            client_security(address, *files)
    with pytest.raises(UserError, match="tls:// needs"):
        client_security("tls://127.0.0.1:8786", files[0], None, files[2])
    security = client_security("tls://127.0.0.1:8786", *files)
    assert security.require_encryption and security.tls_client_cert == files[1]
