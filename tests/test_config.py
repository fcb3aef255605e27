"""The strict config round-trip (fcnseg/config.py) and the three configs that use it.

``ModelConfig``, ``TrainConfig`` and ``BuildOptions`` go dict -> JSON -> dict -> config unchanged,
refuse unknown keys with the one error type (naming the keys and the config), and refuse wrong
types and missing required keys by name. None of this needs torch or finn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fcnseg import config as config_io
from fcnseg.config import ConfigError, UnknownConfigKeys
from fcnseg.errors import UserError
from fcnseg.hw.boards import get_board
from fcnseg.hw.build import BuildOptions
from fcnseg.quantize.config import ModelConfig
from fcnseg.quantize.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _json_round_trip(config: Any) -> Any:
    return type(config).from_dict(json.loads(json.dumps(config.to_dict())))


def _build_options(tmp_path: Path) -> BuildOptions:
    return BuildOptions(
        export_dir=tmp_path / "export",
        out_dir=tmp_path / "build",
        board=get_board("kv260"),
        target_fps=123.5,
        folding_file=tmp_path / "folding.json",
        clock_ns=None,
        vivado=False,
        frame=(360, 640),
        package=False,
    )


CONFIGS = {
    "ModelConfig": lambda tmp: ModelConfig(arch="fcn16s", widths=(4, 8, 8, 16, 16), dropout=0.1),
    "TrainConfig": lambda tmp: TrainConfig(
        name="t", model={"arch": "fcn32s"}, crop=(64, 96), scale_range=(0.5, 2.0), val_length=3
    ),
    "BuildOptions": _build_options,
}


@pytest.mark.parametrize("name", CONFIGS)
def test_json_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    config = CONFIGS[name](tmp_path)
    assert _json_round_trip(config) == config
    if name != "BuildOptions":  # every field has a default: {} is the default config
        assert type(config).from_dict({}) == type(config)()


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_keys_are_one_error_type_naming_keys_and_config(name: str, tmp_path: Path) -> None:
    data = {**CONFIGS[name](tmp_path).to_dict(), "epochz": 3, "colour": "red"}
    with pytest.raises(UnknownConfigKeys) as info:
        type(CONFIGS[name](tmp_path)).from_dict(data)
    error = info.value
    assert isinstance(error, UserError) and isinstance(error, ValueError)
    assert error.keys == ("epochz", "colour")
    message = str(error)
    assert message.startswith("unknown ") and "'epochz', 'colour'" in message
    called = {"ModelConfig": "ModelConfig", "TrainConfig": "training config"}
    assert f"unknown {called.get(name, 'build options')} keys" in message


def test_build_options_keep_types_the_board_included(tmp_path: Path) -> None:
    opts = _build_options(tmp_path)
    data = json.loads(json.dumps(opts.to_dict()))
    assert data["export_dir"] == str(tmp_path / "export") and data["frame"] == [360, 640]
    assert data["board"]["name"] == "kv260" and data["clock_ns"] is None
    back = BuildOptions.from_dict(data)
    assert isinstance(back.export_dir, Path) and back.board == get_board("kv260")
    assert back.resolved_clock_ns() == get_board("kv260").clock_ns
    with pytest.raises(UnknownConfigKeys, match="unknown build options.board keys: 'luts'"):
        BuildOptions.from_dict({**data, "board": {**data["board"], "luts": 1}})


def test_save_and_load_files(tmp_path: Path) -> None:
    opts = _build_options(tmp_path)
    opts.save(tmp_path / "fcnseg_build.json")
    assert BuildOptions.load(tmp_path / "fcnseg_build.json") == opts
    train = TrainConfig(epochs=2)
    train.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == train
    with pytest.raises(ConfigError, match="training config not found"):
        TrainConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        BuildOptions.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        TrainConfig.load(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (ModelConfig, {"num_classes": "7"}, "ModelConfig.num_classes: expected int, got str"),
        (ModelConfig, {"quantized": 1}, "ModelConfig.quantized: expected bool, got int"),
        (ModelConfig, {"widths": 16}, "ModelConfig.widths: expected a list, got int"),
        (ModelConfig, {"widths": [1, 2, "x", 4, 5]}, r"ModelConfig.widths\[2\]: expected int"),
        (TrainConfig, {"epochs": True}, "training config.epochs: expected int, got bool"),
        (TrainConfig, {"crop": [64, 64, 64]}, "training config.crop: expected 2 values, got 3"),
        (TrainConfig, {"model": []}, "training config.model: expected an object"),
        (TrainConfig, {"init_from": 3}, "training config.init_from: expected str, got int"),
        (BuildOptions, {"export_dir": "e", "out_dir": "o"}, "lacks required keys: 'board'"),
    ],
)
def test_wrong_types_and_missing_keys_are_named(cls: type, data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls.from_dict(data)


def test_numbers_widen_but_nothing_else_is_cast() -> None:
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0
    assert isinstance(TrainConfig.from_dict({"lr": 1}).lr, float)
    assert TrainConfig.from_dict({"train_length": None}).train_length is None
    with pytest.raises(ConfigError, match="expected float, got str"):
        TrainConfig.from_dict({"lr": "1e-3"})


def test_the_dataclass_own_checks_still_run() -> None:
    with pytest.raises(ConfigError, match="arch must be one of"):
        ModelConfig.from_dict({"arch": "fcn4s"})
    with pytest.raises(UserError, match="multiples of 32"):
        TrainConfig.from_dict({"crop": [100, 100]})


@dataclass(frozen=True)
class Inner:
    size: tuple[int, ...] = ()


@dataclass(frozen=True)
class Outer:
    inner: Inner | None = None
    names: list[str] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)


def test_helper_covers_nested_lists_and_optional_dataclasses() -> None:
    outer = Outer(Inner((1, 2, 3)), ["a"], {"x": 1.5})
    assert config_io.from_dict(Outer, json.loads(json.dumps(config_io.to_dict(outer)))) == outer
    assert config_io.from_dict(Outer, {"inner": None}) == Outer()
    with pytest.raises(ConfigError, match=r"Outer.table.x: expected float, got str"):
        config_io.from_dict(Outer, {"table": {"x": "1"}})
    with pytest.raises(ConfigError, match="Outer must be a JSON object"):
        config_io.from_dict(Outer, [])
    with pytest.raises(TypeError):
        config_io.to_dict(Outer)


def test_model_config_reads_without_torch() -> None:
    """The hw stage and the benchmarks read model configs on machines without torch."""
    code = (
        "import sys\n"
        "from fcnseg.quantize.config import ModelConfig\n"
        "from fcnseg.hw.build import BuildOptions\n"
        "ModelConfig.from_dict({'arch': 'fcn8s'})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'brevitas')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_models_common_re_exports_the_same_class() -> None:
    pytest.importorskip("torch")
    from fcnseg.quantize.models import ModelConfig as from_models
    from fcnseg.quantize.models.common import ModelConfig as from_common

    assert from_models is from_common is ModelConfig
