"""Config dataclasses: validation names the field, YAML round-trips."""

import pytest

from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    cfg = RunConfig(
        model=ModelConfig(path="m"),
        data=DataConfig(path="d.jsonl", columns={"instruction": "q"}),
        output="o",
    )
    cfg.save(tmp_path / "run.yaml")
    assert RunConfig.load(tmp_path / "run.yaml") == cfg


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: LoraConfig(r=0), "lora.r"),
        (lambda: LoraConfig(lora_dropout=1.0), "lora.lora_dropout"),
        (lambda: TrainConfig(lr=-1), "train.lr"),
        (lambda: TrainConfig(batch_size=0), "train.batch_size"),
        (lambda: TrainConfig(scheduler="step"), "train.scheduler"),
        (lambda: ModelConfig(quant="3bit"), "model.quant"),
        (lambda: DataConfig(val_split=1.0), "data.val_split"),
        (lambda: DataConfig(template="vicuna"), "data.template"),
    ],
)
def test_bad_values_name_their_field(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field and str(e.value).startswith(field)


def test_target_modules_from_a_comma_list():
    assert LoraConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert LoraConfig().target_modules == "all-linear"


def test_bad_yaml_is_a_clear_error(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(p)
    p.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.load(p)


def test_yaml_numbers_are_read_as_their_fields_types(tmp_path):
    from studio.core.config import RunConfig
    from studio.core.errors import ConfigError

    path = tmp_path / "run.yaml"
    # PyYAML reads 2e-4 (no dot) as a string and 8.0 as a float: both are what people write.
    path.write_text("train:\n  lr: 2e-4\n  max_steps: 8.0\n  packing: 'false'\n", encoding="utf-8")
    cfg = RunConfig.load(path)
    assert cfg.train.lr == 2e-4 and cfg.train.max_steps == 8 and cfg.train.packing is False
    for text, field, why in [
        ("train:\n  max_steps: 2.5\n", "train.max_steps", "whole number"),
        ("train:\n  lr: fast\n", "train.lr", "number"),
        ("lora:\n  r: sixteen\n", "lora.r", "whole number"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=why) as e:
            RunConfig.load(path)
        assert e.value.field == field
