"""Model, adapter and settings files from strangers (issue 15): a config.json asking for absurd
memory is refused from the config before anything is allocated, with the estimate; an adapter
that does not fit its base is refused before injection, by one check used everywhere (chat,
serve, export, and train --resume through `check_adapter_fits(model, folder, resume=True)`)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from studio.core.config import ModelConfig, RunConfig
from studio.core.errors import ConfigError, ModelError, StudioError
from studio.core.lora import check_adapter_fits
from studio.core.model_size import check_model_size, config_sizes


def _copy_with(tiny_model, tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------- model size from config.json


@pytest.mark.parametrize(
    "changes",
    [
        {"vocab_size": 10**10},
        {"hidden_size": 10**7, "intermediate_size": 10**7},
        {"num_hidden_layers": 10**7},
    ],
)
def test_an_absurd_config_is_refused_before_loading_with_the_estimate(
    tiny_model, tmp_path, changes
):
    from studio.core.models import load_model

    folder = _copy_with(tiny_model, tmp_path, **changes)
    start = time.perf_counter()
    with pytest.raises(ModelError) as e:
        load_model(ModelConfig(path=str(folder), device="cpu"))
    assert time.perf_counter() - start < 5  # refused from the file, nothing built
    message = e.value.message
    assert str(folder / "config.json") in message
    assert ("GB" in message and "parameters" in message) or "layers" in message


def test_the_refusal_says_the_sizes_and_what_to_do(tmp_path):
    config = {"vocab_size": 10**9, "hidden_size": 4096, "num_hidden_layers": 32}
    with pytest.raises(ModelError) as e:
        check_model_size(config, "cpu", "float32", budget=64 * 1024**3)
    message = e.value.message
    # 10^9 x 4096 tied embeddings + 32 layers of 4h^2 attention and a 2 x 4h^2 MLP.
    assert "at least 4,102.4B parameters" in message and "15282.8 GB (float32)" in message
    assert "more than the 64.0 GB of memory on this cpu" in message
    assert "vocab_size 1,000,000,000" in message and "--quant 4bit" in message
    assert e.value.field == "model.path"


def test_a_model_that_fits_passes_and_a_real_one_loads(tiny_model):
    from studio.core.models import load_model

    config = json.loads((tiny_model / "config.json").read_text())
    assert 0 < check_model_size(config, "cpu", "float32", budget=10**6) <= 10**6
    loaded = load_model(ModelConfig(path=str(tiny_model), device="cpu"))
    assert sum(p.numel() for p in loaded.model.parameters()) > 0


@pytest.mark.parametrize(
    "value",
    ["64", 6.4, -1, True, ["64"], {"a": 1}],
    ids=["str", "float", "neg", "bool", "list", "dict"],
)
def test_a_size_that_is_not_a_size_is_a_model_error_naming_it(tmp_path, tiny_model, value):
    from studio.core.model_info import read_model_info

    folder = _copy_with(tiny_model, tmp_path, hidden_size=value)
    with pytest.raises(ModelError, match="hidden_size: .* which is not a size"):
        read_model_info(str(folder))


def test_model_info_refuses_ten_million_layers_before_building_them(tiny_model, tmp_path):
    from studio.core.model_info import read_model_info

    folder = _copy_with(tiny_model, tmp_path, num_hidden_layers=10**7)
    start = time.perf_counter()
    with pytest.raises(ModelError, match="10,000,000 layers, more than the 1,000"):
        read_model_info(str(folder))
    assert time.perf_counter() - start < 5


def _meta_count(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen2-tied", "gpt2", "mixtral"])
def test_the_estimate_is_a_tight_lower_bound(arch):
    """Never a false alarm (at most the true count), and close (within 15%)."""
    from transformers import GPT2Config, LlamaConfig, MixtralConfig, Qwen2Config

    small = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=3,
                 num_attention_heads=8, num_key_value_heads=2, vocab_size=3000)  # fmt: skip
    config = {
        "llama": lambda: LlamaConfig(**small, tie_word_embeddings=False),
        "qwen2": lambda: Qwen2Config(**small, tie_word_embeddings=False),
        "qwen2-tied": lambda: Qwen2Config(**small, tie_word_embeddings=True),
        "gpt2": lambda: GPT2Config(n_embd=256, n_layer=3, n_head=8, vocab_size=3000),
        "mixtral": lambda: MixtralConfig(**small, num_local_experts=4, tie_word_embeddings=False),
    }[arch]()
    estimate = config_sizes(json.loads(config.to_json_string())).params
    true = _meta_count(config)
    assert 0.85 * true <= estimate <= true, (estimate, true)


# ---------------------------------------------------------------- adapter fit


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    from tests.test_infer import make_run

    return make_run(str(tiny_model), tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def base(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model)


def test_a_fitting_adapter_passes(base, run_dir):
    check_adapter_fits(base, run_dir / "adapter")
    check_adapter_fits(base, run_dir / "checkpoints" / "step-000004")


def test_an_adapter_for_a_wider_model_names_the_layer_and_both_sizes(run_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from studio.core.tiny import build_model

    wide = AutoModelForCausalLM.from_pretrained(build_model(tmp_path / "wide", hidden_size=96))
    with pytest.raises(ModelError) as e:
        check_adapter_fits(wide, run_dir / "adapter")
    message = e.value.message
    assert "does not fit this base model (its layer model.layers.0." in message
    assert "64 inputs here, 96 in the model" in message or "outputs here" in message


def test_an_adapter_with_more_layers_than_the_base_is_refused(run_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from studio.core.tiny import build_model

    shallow = AutoModelForCausalLM.from_pretrained(build_model(tmp_path / "one", layers=1))
    with pytest.raises(ModelError, match=r"its layer model\.layers\.1\.\S+ is not in this model"):
        check_adapter_fits(shallow, run_dir / "adapter")


def test_a_rank_that_contradicts_adapter_config_is_refused(base, run_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 8
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="has rank 4, but adapter_config.json says r=8"):
        check_adapter_fits(base, folder)


@pytest.mark.parametrize(
    "config", [b"null", b"[]", b'{"r": "four"}', b"[" * 50_000], ids=["null", "list", "r", "deep"]
)
def test_a_broken_adapter_config_is_a_model_error(base, run_dir, tmp_path, config):
    folder = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", folder)
    (folder / "adapter_config.json").write_bytes(config)
    with pytest.raises(ModelError, match="adapter_config.json"):
        check_adapter_fits(base, folder)


def test_a_truncated_adapter_file_is_a_model_error(base, run_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(ModelError, match="cannot be read"):
        check_adapter_fits(base, folder)


def _injected(tiny_model, r: int, targets: list[str]):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=8, target_modules=targets))


def test_resume_checks_ranks_and_coverage_against_the_injected_model(tiny_model, run_dir):
    ckpt = run_dir / "checkpoints" / "step-000004"  # r=4 on q_proj, v_proj, down_proj
    check_adapter_fits(
        _injected(tiny_model, 4, ["q_proj", "v_proj", "down_proj"]), ckpt, resume=True
    )
    with pytest.raises(
        ModelError,
        match=r"has lora_A \[4, \d+\], the resumed model's \[8, \d+\]\)\. It was saved with other",
    ):
        check_adapter_fits(
            _injected(tiny_model, 8, ["q_proj", "v_proj", "down_proj"]), ckpt, resume=True
        )
    with pytest.raises(ModelError, match="holds no weights for 2 of the model's LoRA layers"):
        check_adapter_fits(
            _injected(tiny_model, 4, ["q_proj", "v_proj", "down_proj", "o_proj"]), ckpt, resume=True
        )
    with pytest.raises(ModelError, match="has no LoRA in the model being resumed"):
        check_adapter_fits(_injected(tiny_model, 4, ["q_proj", "v_proj"]), ckpt, resume=True)


def test_export_refuses_a_misfit_before_peft_injects_it(run_dir, tmp_path):
    from studio.core.export.merge import load_merged
    from studio.core.infer import find_adapter
    from studio.core.tiny import build_model

    wide = build_model(tmp_path / "wide", hidden_size=96)
    with pytest.raises(ModelError, match="does not fit this base model .its layer"):
        load_merged(find_adapter(run_dir), str(wide), "float32")


def test_find_adapter_ignores_a_base_name_that_is_not_text(run_dir, tmp_path):
    from studio.core.infer import find_adapter

    folder = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", folder)
    for config in (b"null", b'{"base_model_name_or_path": ["x"]}', b"[" * 50_000):
        (folder / "adapter_config.json").write_bytes(config)
        assert find_adapter(folder).base_model == ""


# ---------------------------------------------------------------- run.yaml and project.yaml


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"\x80model: {}", "is not UTF-8 text"),
        (b"[" * 1000, "nested too deeply"),
        (b"model: {path: [a, b]}", "model.path: must be text"),
        (b"lora: {target_modules: [[q_proj]]}", "lora.target_modules: must be text"),
        (b"data: {columns: {instruction: [q]}}", "data.columns: must be a mapping of role"),
        (b"train: {lr: .nan}", "train.lr: must be a number"),
        (b"model: {1: x, path: y, zz: 2}", "model.1: unknown setting"),
        (
            b"a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nlora: {target_modules: *b}",
            "unknown section",
        ),  # fmt: skip
    ],
)
def test_run_yaml_from_a_stranger_is_a_config_error(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=expected):
        RunConfig.load(path)


def test_run_yaml_numbers_and_nulls_read_as_text_where_text_is_expected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {path: ~}\noutput: 2024\ndata: {columns: {instruction: 1}}\n")
    cfg = RunConfig.load(path)
    assert (
        cfg.model.path == "" and cfg.output == "2024" and cfg.data.columns == {"instruction": "1"}
    )


def test_a_damaged_project_yaml_opens_with_defaults_or_says_why(tmp_path):
    from studio.core.project import open_project

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "project.yaml").write_text("name: [x]\ncreated: [1]\nsettings: [1]\nmodel: m\n")
    project = open_project(folder)
    assert (project.name, project.model, project.settings, project.created) == ("p", "m", {}, 0.0)
    assert isinstance(project.config(), RunConfig)
    (folder / "project.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(StudioError, match="project.yaml is not UTF-8 text"):
        open_project(folder)


def test_per_layer_sizes_are_read_as_their_smallest():
    """Gemma 3n lists one intermediate size per layer: a real config, not a damaged one."""
    sizes = config_sizes({"hidden_size": 8, "intermediate_size": [32, 16], "num_hidden_layers": 2})
    assert sizes.intermediate == 16
