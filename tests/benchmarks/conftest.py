"""One quick-mode benchmark context per session: a tiny FCN-8s package built once (~20 s),
empty shipped-package folder (so the tiny subject is used), tiny checkpoints for accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_ctx(tmp_path_factory: pytest.TempPathFactory):
    from fcnseg.benchmarks.runner import REPO, Context

    root = tmp_path_factory.mktemp("bench")
    (root / "packages").mkdir()
    return Context(
        reps=1,
        quick=True,
        work_dir=root / "work",
        packages_dir=root / "packages",
        model_dir=root / "models",
        samples_dir=REPO / "samples",
        compile_missing=False,
        log=lambda msg: None,
    )


@pytest.fixture(scope="session")
def tiny_checkpoints(quick_ctx) -> Path:
    """A tiny quantized checkpoint and its float twin in ``quick_ctx.model_dir``."""
    pytest.importorskip("torch")
    from fcnseg.benchmarks.subjects import TINY_TILE, random_net, tiny_config
    from fcnseg.quantize.models.io import save_checkpoint

    cfg = tiny_config()
    quick_ctx.model_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(quick_ctx.model_dir / "tiny.safetensors", random_net(cfg, TINY_TILE), cfg)
    fcfg = cfg.replace(quantized=False)
    save_checkpoint(
        quick_ctx.model_dir / "tiny-float.safetensors", random_net(fcfg, TINY_TILE), fcfg
    )
    return quick_ctx.model_dir
