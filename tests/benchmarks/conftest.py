"""One quick-mode benchmark context per session: a tiny FCN-8s package built once (~20 s),
empty shipped-package folder (so the tiny subject is used), tiny checkpoints for accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def quick_ctx(tmp_path_factory: pytest.TempPathFactory):
    from fcnseg.benchmarks.runner import Context

    root = tmp_path_factory.mktemp("bench")
    (root / "packages").mkdir()
    return Context(
        reps=1,
        quick=True,
        work_dir=root / "work",
        packages_dir=root / "packages",
        samples_dir=SAMPLES,
        compile_missing=False,
        log=lambda msg: None,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny quantized checkpoint with its float twin (``tiny-float.safetensors``) beside it."""
    pytest.importorskip("torch")
    from fcnseg.benchmarks.subjects import TINY_TILE, random_net, tiny_config
    from fcnseg.quantize.models.io import save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    cfg = tiny_config()
    save_checkpoint(folder / "tiny.safetensors", random_net(cfg, TINY_TILE), cfg)
    fcfg = cfg.replace(quantized=False)
    save_checkpoint(folder / "tiny-float.safetensors", random_net(fcfg, TINY_TILE), fcfg)
    return folder / "tiny.safetensors"
