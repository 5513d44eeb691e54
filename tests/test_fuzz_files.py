"""Fuzzed settings and model files: run.yaml (`--config`), project.yaml, adapter folders
(adapter_config.json), model folders (config.json, tokenizer files) and chat templates.

The property everywhere: reading a file from a stranger either gives a value of the declared
shape or raises the project's own error (StudioError and kin) with a message; never another
exception, a hang or a huge allocation. Counts are bounded; STUDIO_FUZZ_EXAMPLES raises them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.errors import ConfigError, ModelError, StudioError
from tests.fuzzing import fuzz, json_values

SECTIONS = {"model": ModelConfig, "lora": LoraConfig, "data": DataConfig, "train": TrainConfig}
FIELDS = sorted({f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)})

yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["2e-4", "1e400", "yes", "auto", "all-linear", "q_proj,v_proj", ""]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)

near_config = st.dictionaries(
    st.sampled_from([*SECTIONS, "output", "bogus", 3]),
    yaml_values | st.dictionaries(st.sampled_from([*FIELDS, "bogus", 1]), yaml_values, max_size=5),
    max_size=5,
)

HOSTILE_YAML = [
    "[" * 1000,  # deeper than PyYAML's recursion can go (600 is enough; 5000 takes 2 s to fail)
    "a: " + "[" * 1000,
    "model: {path: " + "{a: " * 3000 + "}" * 3000 + "}",
    # A billion-laughs alias bomb: tiny on disk, 10^9 items if anything copies it.
    "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "data: {columns: {instruction: q}, path: x}\nlora: {target_modules: *f}\n",
    "data:\n  columns: &c {a: b}\n  path: *c\n",
    "!!python/object/apply:os.system ['true']",
    "model: !!binary aGVsbG8=",
    "train: {lr: .nan, epochs: .inf}",
    "lora: {r: 99999999999999999999999999}",
    "\ufeffmodel: {path: x}",
]


def _valid_yaml() -> str:
    cfg = RunConfig()
    cfg.model.path, cfg.data.path, cfg.output = "m", "d.jsonl", "out"
    return cfg.to_yaml()


@st.composite
def yaml_file(draw) -> bytes:
    kind = draw(st.sampled_from(["near", "text", "mutated", "hostile", "bytes"]))
    if kind == "near":
        return yaml.safe_dump(draw(near_config), allow_unicode=True).encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode()
    if kind == "hostile":
        return draw(st.sampled_from(HOSTILE_YAML)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    lines = _valid_yaml().splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = (
        draw(st.sampled_from(["", "  ", "- x", "  r: [", "  lr: abc", ": :", "\t"])) + lines[i]
    )
    return "\n".join(lines).encode()


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) is float
    if hint is str:
        return type(value) is str
    if hint is type(None):
        return value is None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return type(value) is list and all(_type_ok(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(hint)
        return type(value) is dict and all(
            _type_ok(a, k) and _type_ok(b, v) for a, b in value.items()
        )
    return True


def assert_well_typed(cfg: RunConfig) -> None:
    for name, cls in SECTIONS.items():
        section = getattr(cfg, name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(section, f.name)
            assert _type_ok(value, hints[f.name]), f"{name}.{f.name} = {value!r}"
    assert type(cfg.output) is str


@fuzz(100)
@given(content=yaml_file())
def test_run_yaml_loads_well_typed_or_is_a_config_error(tmp_path, content):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    try:
        cfg = RunConfig.load(path)
    except ConfigError as e:
        assert e.message.strip() and e.field
        return
    assert_well_typed(cfg)
    again = tmp_path / "again.yaml"
    cfg.save(again)
    assert RunConfig.load(again) == cfg  # what it writes, it reads back the same


# ------------------------------------------------------------------ project.yaml

near_project = st.dictionaries(
    st.sampled_from(["name", "dataset", "model", "settings", "created", "bogus"]),
    yaml_values | near_config,
    max_size=5,
)


@st.composite
def project_file(draw) -> bytes:
    if draw(st.booleans()):
        return yaml.safe_dump(draw(near_project), allow_unicode=True).encode()
    return draw(yaml_file())


@fuzz(80)
@given(content=project_file())
def test_project_yaml_opens_well_typed_or_is_a_studio_error(tmp_path, content):
    from studio.core.project import PROJECT_FILE, open_project

    folder = tmp_path / "proj"
    folder.mkdir(exist_ok=True)
    (folder / PROJECT_FILE).write_bytes(content)
    try:
        project = open_project(folder)
    except StudioError as e:
        assert e.message.strip()
        return
    assert all(type(v) is str for v in (project.name, project.dataset, project.model))
    assert type(project.settings) is dict and type(project.created) is float
    assert_well_typed(project.config())  # bad settings fall back to defaults, never raise
    project.save()
    assert open_project(folder).to_dict() == project.to_dict()


# ------------------------------------------------------------------ adapter folders

near_adapter = st.fixed_dictionaries(
    {},
    optional={
        "base_model_name_or_path": json_values,
        "peft_type": st.sampled_from(["LORA", "IA3", 3]) | json_values,
        "r": st.integers(-3, 10**12) | json_values,
        "lora_alpha": st.integers(-3, 64) | json_values,
        "target_modules": st.lists(st.sampled_from(["q_proj", "v_proj", "nope"])) | json_values,
        "use_rslora": json_values,
        "use_dora": json_values,
        "rank_pattern": json_values,
        "modules_to_save": json_values,
    },
)


@st.composite
def adapter_config(draw) -> bytes:
    kind = draw(st.sampled_from(["near", "json", "bytes", "deep"]))
    if kind == "near":
        return json.dumps(draw(near_adapter)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        return ('{"base_model_name_or_path": ' + "[" * 50_000).encode()
    return draw(st.binary(max_size=60))


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    from tests.test_infer import make_run

    return make_run(str(tiny_model), tmp_path_factory.mktemp("fuzzrun") / "run") / "adapter"


@fuzz(80)
@given(config=adapter_config(), run_yaml=st.none() | yaml_file())
def test_adapter_folder_is_found_or_a_studio_error(tmp_path, config, run_yaml):
    from studio.core.infer import find_adapter

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True, exist_ok=True)
    (run / "adapter" / "adapter_config.json").write_bytes(config)
    (run / "run.yaml").unlink(missing_ok=True)
    if run_yaml is not None:
        (run / "run.yaml").write_bytes(run_yaml)
    try:
        info = find_adapter(run)
    except StudioError as e:
        assert e.message.strip()
        return
    assert info.folder == (run / "adapter").resolve()
    assert type(info.base_model) is str and type(info.template) is str


@fuzz(40)
@given(config=adapter_config())
def test_export_reads_any_adapter_config_or_falls_back(tmp_path, tiny_model, adapter_dir, config):
    """The streaming merge reads adapter_config.json first: None (peft's path) or weights."""
    from studio.core.export.stream_merge import streamable

    folder = tmp_path / "adapter"
    if not folder.exists():
        shutil.copytree(adapter_dir, folder)
    (folder / "adapter_config.json").write_bytes(config)
    try:
        merged = streamable(folder, tiny_model, "float32")
    except StudioError as e:
        assert e.message.strip()
        return
    if merged is not None:
        assert set(merged.deltas) <= set(merged.entries)


# ------------------------------------------------------------------ model folders

sizes = st.integers(-2, 10**13) | st.sampled_from([0, 1, 64, "64", 6.4, None, [], True])

near_model_config = st.fixed_dictionaries(
    {},
    optional={
        "architectures": st.lists(st.sampled_from(["LlamaForCausalLM", "Nope"])) | json_values,
        "model_type": st.sampled_from(["llama", "qwen2", "nope"]) | json_values,
        "vocab_size": sizes,
        "hidden_size": sizes,
        "intermediate_size": sizes,
        "num_hidden_layers": sizes,
        "num_attention_heads": sizes,
        "num_key_value_heads": sizes,
        "max_position_embeddings": sizes,
        "text_config": json_values,
        "torch_dtype": st.sampled_from(["float32", "bfloat16", "int9"]) | json_values,
    },
)


@st.composite
def model_config(draw, base: dict) -> bytes:
    kind = draw(st.sampled_from(["edit", "edit", "near", "json", "bytes"]))
    if kind == "edit":  # the real config with a few sizes changed, as a stranger might
        cfg = dict(base)
        cfg.update(draw(near_model_config))
        return json.dumps(cfg).encode()
    if kind == "near":
        return json.dumps(draw(near_model_config)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    return draw(st.binary(max_size=60))


@pytest.fixture(scope="module")
def model_copy(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzmodel") / "model"
    shutil.copytree(tiny_model, folder)
    return folder


@fuzz(40)
@given(data=st.data())
def test_model_folder_is_described_or_a_model_error(model_copy, tiny_model, data):
    """read_model_info (the wizard's facts) and the pre-load size check, on any config.json."""
    from studio.core.model_info import read_model_info
    from studio.core.models import context_length, read_config

    base = json.loads((tiny_model / "config.json").read_text())
    content = data.draw(model_config(base))
    (model_copy / "config.json").write_bytes(content)
    try:
        info = read_model_info(str(model_copy))
    except ModelError as e:
        assert e.message.strip()
    else:
        assert all(
            type(v) is int and v >= 0
            for v in (info.num_params, info.hidden_size, info.num_layers, info.vocab_size)
        )
        assert type(info.architecture) is str and type(info.model_type) is str
    try:
        config = read_config(str(model_copy))
        ctx = context_length(config)
        assert ctx is None or (type(ctx) is int and ctx > 0)
        from studio.core.model_size import check_model_size

        estimate = check_model_size(config, "cpu", "float32", budget=8 * 1024**3)
    except ModelError as e:
        assert e.message.strip() and e.field
        return
    assert 0 <= estimate <= 8 * 1024**3


TOKENIZER_EDITS = [
    ("tokenizer.json", b""),
    ("tokenizer.json", b"{"),
    ("tokenizer.json", b'{"model": {"type": "BPE", "vocab": [], "merges": 3}}'),
    ("tokenizer.json", b"[" * 50_000),
    ("tokenizer_config.json", b"[]"),
    ("tokenizer_config.json", b'{"tokenizer_class": "NoSuchTokenizer"}'),
    ("tokenizer_config.json", b'{"model_max_length": "lots", "eos_token": 7}'),
    ("tokenizer_config.json", b'{"chat_template": 42}'),
    ("tokenizer_config.json", b'{"added_tokens_decoder": {"x": 1}}'),
    ("special_tokens_map.json", b'{"eos_token": {"content": 3}}'),
]


@fuzz(30)
@given(
    edit=st.sampled_from(TOKENIZER_EDITS)
    | st.tuples(
        st.sampled_from(["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]),
        st.binary(max_size=40),
    ),
    flip=st.integers(0, 2**31),
)
def test_tokenizer_files_load_or_are_a_model_error(tiny_model, tmp_path, edit, flip):
    from studio.core.models import load_tokenizer

    folder = tmp_path / "tok"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, folder / name)
    shutil.copy(tiny_model / "config.json", folder / "config.json")
    name, content = edit
    if not content and (folder / name).is_file() and flip % 2:
        # A byte changed somewhere in the real file instead.
        data = bytearray((folder / name).read_bytes())
        data[flip % len(data)] = (data[flip % len(data)] + 1 + flip % 255) % 256
        content = bytes(data)
    (folder / name).write_bytes(content)
    try:
        tok = load_tokenizer(str(folder))
    except ModelError as e:
        assert e.message.strip()
        return
    assert tok("hello")["input_ids"] is not None
