"""Training: loss goes down, checkpoints round-trip, resume continues exactly, CLI train/eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("skimage")

from fcnseg.cli import main  # noqa: E402
from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize.evaluate import evaluate  # noqa: E402
from fcnseg.quantize.models.io import load_checkpoint  # noqa: E402
from fcnseg.quantize.train import (  # noqa: E402
    _start_phase,
    learning_rate,
    model_config,
    open_datasets,
    plan,
    run_training,
)
from fcnseg.quantize.train_config import TrainConfig  # noqa: E402
from fcnseg.quantize.train_state import load_optimizer, save_optimizer  # noqa: E402
from tests.helpers.train_configs import tiny_train_config  # noqa: E402

TINY = tiny_train_config(lr=0.003, float_lr=0.01)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A two-phase run (float twin, then QAT from it) made through `fcnseg train`."""
    root = tmp_path_factory.mktemp("train")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    run_dir = root / "run"
    code = main(["train", "--config", str(config), "-o", str(run_dir), "--no-progress"])
    assert code == 0
    return run_dir


def test_two_phase_run_writes_its_outputs(cli_run):
    for phase_dir in (cli_run / "float", cli_run):
        for name in ("config.json", "metrics.jsonl", "best.safetensors", "best.json"):
            assert (phase_dir / name).is_file(), phase_dir / name
        for name in ("last.safetensors", "last.optim.safetensors", "last.optim.json"):
            assert (phase_dir / name).is_file(), phase_dir / name
    records = [json.loads(line) for line in (cli_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [2, 4]  # 8 scenes / batch 4
    assert set(records[0]["val"]) >= {"pixel_acc", "mean_acc", "mean_iu", "fw_iu"}
    saved = json.loads((cli_run / "config.json").read_text())
    assert saved["model"]["quantized"] is True and saved["model"]["num_classes"] == 7
    assert (
        json.loads((cli_run / "float" / "config.json").read_text())["model"]["quantized"] is False
    )


def test_checkpoint_round_trips_to_the_recorded_metrics(cli_run):
    model, meta = load_checkpoint(cli_run / "best.safetensors")
    assert meta["model_config"]["quantized"] is True
    assert meta["classes"][0] == "background" and len(meta["palette"]) == 7
    cfg = TrainConfig.from_dict(TINY)
    _, val = open_datasets(cfg)
    result = evaluate(model, val)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert result[key] == meta["metrics"][key]


def test_loss_decreases_when_fitting_a_few_scenes(tmp_path):
    cfg = TrainConfig.from_dict(
        {**TINY, "train_length": 4, "epochs": 12, "float_epochs": 0, "lr": 0.02}
    )
    (summary,) = run_training(cfg, tmp_path, float_only=True, epochs=12, log=_quiet, progress=False)
    losses = [e["loss"] for e in summary["epochs"]]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    cfg = TrainConfig.from_dict({**TINY, "float_epochs": 0, "init_from": None, "epochs": 2})
    run_training(cfg, tmp_path / "straight", log=_quiet, progress=False)

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(line: str) -> None:
        if "epoch 1/2" in line:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_training(cfg, tmp_path / "resumed", log=stop_after_first_epoch, progress=False)
    with pytest.raises(UserError, match="--resume"):
        run_training(cfg, tmp_path / "resumed", log=_quiet, progress=False)
    lines: list[str] = []
    run_training(cfg, tmp_path / "resumed", resume=True, log=lines.append, progress=False)
    assert "at epoch 1, step 2" in lines[0]

    straight, _ = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    resumed, meta = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert meta["epoch"] == 2 and meta["step"] == 4
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_optimizer_state_round_trips(tmp_path):
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=0.1)
    (params[0].sum() + params[1].square().sum()).backward()
    optimizer.step()
    save_optimizer(tmp_path / "last", optimizer)
    other = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.5)
    load_optimizer(tmp_path / "last", other)
    for index, state in optimizer.state_dict()["state"].items():
        restored = other.state_dict()["state"][index]
        for name, value in state.items():
            assert torch.equal(value, restored[name])
    assert other.param_groups[0]["lr"] == 0.1


def test_plan_and_schedule():
    cfg = TrainConfig.from_dict(TINY)
    float_phase, qat_phase = plan(cfg, Path("r"))
    assert float_phase.run_dir == Path("r/float") and not float_phase.model["quantized"]
    assert qat_phase.init_from == Path("r/float/best.safetensors")
    (only,) = plan(cfg, Path("r"), float_only=True)
    assert only.name == "float" and only.run_dir == Path("r")
    # A float model with init_from continues training it (the fair float baseline for QAT).
    baseline = {**TINY, "model": {**TINY["model"], "quantized": False}, "init_from": "f.st"}
    (cont,) = plan(TrainConfig.from_dict(baseline), Path("b"))
    assert cont.name == "float" and cont.init_from == Path("f.st") and cont.run_dir == Path("b")
    assert learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(100, 100, 1.0, 10) == pytest.approx(0.0)


def test_bad_configs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(UserError, match="multiples of 32"):
        TrainConfig.from_dict({"crop": [100, 100]})
    with pytest.raises(UserError, match="not found"):
        TrainConfig.load(tmp_path / "missing.json")


def test_eval_cli_prints_the_fcn_metrics(cli_run, capsys, tmp_path):
    out_json = tmp_path / "m.json"
    args = ["eval", "--checkpoint", str(cli_run / "best.safetensors"), "--split", "test"]
    args += ["--size", "64", "64", "--length", "2", "--classes", "--json", str(out_json)]
    assert main(args) == 0
    text = capsys.readouterr().out
    for word in ("pixel acc.", "mean acc.", "mean IU", "f.w. IU", "4-bit", "star"):
        assert word in text
    record = json.loads(out_json.read_text())
    assert record["images"] == 2
    # the confusion matrix, as for a package: one row and column per class, every pixel once
    confusion = np.array(record["confusion"])
    assert confusion.shape == (len(record["class_iu"]),) * 2
    assert confusion.sum() == record["pixels"] == 2 * 64 * 64
    both = ["eval", "--checkpoint", str(cli_run / "best.safetensors"), "--package", str(tmp_path)]
    assert main(both) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_refuses_a_changed_schedule(tmp_path):
    cfg = TrainConfig.from_dict({**TINY, "float_epochs": 0, "epochs": 1})
    run_training(cfg, tmp_path, log=_quiet, progress=False)
    with pytest.raises(UserError, match=r"steps_per_epoch None -> 1.*options of the interrupted"):
        run_training(cfg.replace(steps_per_epoch=1), tmp_path, resume=True, log=_quiet)
    with pytest.raises(UserError, match=r"epochs 1 -> 2"):
        run_training(cfg, tmp_path, resume=True, epochs=2, log=_quiet, progress=False)
    # the thread count does not change what is computed
    (summary,) = run_training(cfg.replace(threads=2), tmp_path, resume=True, log=_quiet)
    assert summary["epochs"] == []  # nothing left to train


def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """The summed absolute difference of two models' float parameters."""
    theirs = dict(b.named_parameters())
    return sum(float((p - theirs[n]).abs().sum()) for n, p in a.named_parameters())


def test_finetune_goes_on_from_the_checkpoint(cli_run, tmp_path, capsys):
    """`--finetune` starts from the checkpoint's weights and learned scales (no calibration)."""
    source = cli_run / "best.safetensors"
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "ft"
    args = ["train", "--config", str(config), "--finetune", str(source), "--epochs", "1"]
    assert main([*args, "-o", str(run), "--no-progress"]) == 0
    assert "fine-tuning" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert not (run / "float").exists()
    tuned, meta = load_checkpoint(run / "last.safetensors")
    start, start_meta = load_checkpoint(source)
    assert meta["model_config"] == start_meta["model_config"]
    # the phase starts at the checkpoint exactly: every parameter and buffer (learned scales)
    cfg = TrainConfig.from_dict(TINY)
    (phase,) = plan(cfg, tmp_path / "again", epochs=1, finetune=source)
    mcfg = model_config(cfg, phase.model, len(start_meta["classes"]))
    state = _start_phase(cfg, phase, mcfg, None, False, _quiet)
    begun, loaded = state.model.state_dict(), start.state_dict()
    assert begun.keys() == loaded.keys()
    assert all(torch.equal(begun[k], loaded[k]) for k in loaded)
    # one epoch moved the weights, less than a run of the same length from scratch is away
    fresh = tmp_path / "fresh"
    assert main(["train", "--config", str(config), "--epochs", "1", "--float-epochs", "0",
                 "-o", str(fresh), "--no-progress"]) == 0  # fmt: skip
    scratch, _ = load_checkpoint(fresh / "last.safetensors")
    assert 0 < _distance(tuned, start) < _distance(scratch, start)


def test_finetune_refuses_another_model_and_float(cli_run, tmp_path, capsys):
    source = cli_run / "best.safetensors"
    other = {**TINY, "model": {**TINY["model"], "weight_bits": 8}}
    config = tmp_path / "other.json"
    config.write_text(json.dumps(other))
    args = ["train", "--config", str(config), "--finetune", str(source), "-o", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "weight_bits 4 in the checkpoint vs 8 in the config" in err and "\n" not in err
    config.write_text(json.dumps(TINY))
    assert main([*args, "--float"]) == 2
    assert "--finetune goes on with QAT" in capsys.readouterr().err
