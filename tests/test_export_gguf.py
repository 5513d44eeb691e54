"""The native GGUF writer: metadata, tokenizer, tensors read back with gguf's reader and
dequantized within each type's own error bound; the LoRA GGUF; refusals; cancel. When
llama-cpp-python is installed, llama.cpp itself loads the files and must tokenise and answer
like transformers."""

import json
import shutil

import numpy as np
import pytest
import torch

from studio.core.export.gguf_file import (
    Cancelled,
    ExportError,
    check_supported,
    permute_qk,
    unpermute_qk,
    write_gguf,
    write_lora_gguf,
)
from studio.core.export.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX, recognise_pre_tokenizer
from tests.export_models import build_qwen2, build_qwen3, build_spm_llama

CHAT = "<|im_start|>user\nHello, how are you today? 你好 🙂 1234<|im_end|>\n<|im_start|>assistant\n"


# --- helpers --------------------------------------------------------------------------------


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    return model, AutoTokenizer.from_pretrained(folder), config


def read(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def expected_names(n_layers, *, tied=False, bias=False, qk_norm=False):
    """HF name -> GGUF name, written out by hand (independent of gguf's TensorNameMap)."""
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if not tied:
        names["lm_head.weight"] = "output.weight"
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    if qk_norm:
        parts.update({"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"})
    for i in range(n_layers):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
        if bias:
            for x in "qkv":
                names[f"model.layers.{i}.self_attn.{x}_proj.bias"] = f"blk.{i}.attn_{x}.bias"
    return names


# Largest |q| a block can hold, and the rounding error in units of the block scale d: Q8_0 rounds
# to nearest (d/2); Q4_0/Q5_0 also round to nearest except the values at +amax, which the
# asymmetric grid (-8..7, -16..15) clips by up to one step (d).
QMAX = {"Q8_0": 127, "Q5_0": 16, "Q4_0": 8}


def quant_bound(raw, type_name, want):
    """Per-element error bound from each block's stored f16 scale."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    rows = want.shape[0]
    d = np.asarray(raw, np.uint8).reshape(rows, -1, size)[..., :2].copy().view(np.float16)
    d = np.repeat(d[..., 0].astype(np.float32), block, axis=1)
    qmax = QMAX[type_name]
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped = np.where(d != 0, want / d, 0) > qmax - 0.5 - 1e-3
    step = np.where(clipped & (qmax < 127), 1.0, 0.5)
    # + the scale's own f16 rounding (relative 2^-11) times the largest quant it multiplies
    return (step + qmax * 2.0**-11) * np.abs(d) * (1 + 2.0**-10) + 1e-7


def check_tensor(t, hf_weight, unpermute=None):
    """The GGUF tensor dequantizes back to the HF weight within its type's bound."""
    from gguf import quants

    name = t.tensor_type.name
    want_hf = hf_weight.detach().float().numpy()
    stored = permute_qk(want_hf, *unpermute) if unpermute else want_hf
    got = quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(stored.shape)
    if name == "F32":
        expect, bound = stored, 0.0
    elif name == "F16":
        expect, bound = stored.astype(np.float16).astype(np.float32), 0.0
    elif name == "BF16":
        expect, bound = torch.from_numpy(stored).bfloat16().float().numpy(), 0.0
    else:
        expect, bound = stored, quant_bound(t.data, name, stored)
    if unpermute:  # compare in HF's own row order
        got, expect = unpermute_qk(got, *unpermute), unpermute_qk(expect, *unpermute)
        bound = unpermute_qk(bound, *unpermute) if np.ndim(bound) else bound
    assert np.all(np.abs(got - expect) <= bound), (t.name, name, np.abs(got - expect).max())


def write(tmp_path, folder, qtype, **kwargs):
    model, tok, config = load(folder)
    notes: list[str] = []
    path = tmp_path / f"{folder.name}-{qtype}.gguf"
    summary = write_gguf(
        path,
        model.state_dict(),
        config,
        folder,
        qtype,
        chat_template=kwargs.pop("chat_template", None),
        log=notes.append,
        **kwargs,
    )
    return path, summary, notes, model, tok, config


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return build_qwen2(tmp_path_factory.mktemp("qwen2") / "model")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return build_qwen3(tmp_path_factory.mktemp("qwen3") / "model")


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    return build_spm_llama(tmp_path_factory.mktemp("spm") / "model")


# --- the model GGUF -------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16", "q8_0", "q5_0", "q4_0"])
def test_llama_tensors_round_trip_within_the_types_bound(tmp_path, tiny_model, qtype):
    path, summary, notes, model, tok, config = write(tmp_path, tiny_model, qtype)
    fields, tensors = read(path)
    names = expected_names(2)
    assert set(tensors) == set(names.values())
    assert summary["tensors"] == len(names) and summary["bytes"] == path.stat().st_size
    assert summary["file_type"] == qtype.upper() and summary["fallbacks"] == 0
    ftypes = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q5_0": 8, "bf16": 32}
    assert fields["general.file_type"] == ftypes[qtype]
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    state = model.state_dict()
    for hf, gg in names.items():
        t = tensors[gg]
        if state[hf].dim() == 1:
            assert t.tensor_type.name == "F32"
        elif gg == "output.weight" and qtype in ("q4_0", "q5_0"):
            assert t.tensor_type.name == "Q8_0"  # the output matrix is kept at 8 bits
        else:
            assert t.tensor_type.name == qtype.upper()
        permute = (
            (n_head, n_head) if "attn_q." in gg else (n_head, n_kv) if "attn_k." in gg else None
        )
        check_tensor(t, state[hf], unpermute=permute)


def test_llama_metadata_and_byte_level_vocab(tmp_path, tiny_model):
    path, summary, notes, model, tok, config = write(tmp_path, tiny_model, "f16", name="tiny")
    fields, tensors = read(path)
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "model"
    assert fields["general.name"] == "tiny" and fields["general.quantization_version"] == 2
    expected = {
        "llama.context_length": 1024,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.rope.freq_base": 10000.0,
        "llama.vocab_size": len(tok),
    }
    for key, value in expected.items():
        assert fields[key] == value, key
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.tokens"] == tok.convert_ids_to_tokens(list(range(len(tok))))
    merges = json.loads((tiny_model / "tokenizer.json").read_text())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    types = fields["tokenizer.ggml.token_type"]
    assert types[tok.convert_tokens_to_ids("<|im_end|>")] == 3 and types[10] == 1  # control, normal
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert summary["pre_tokenizer"] == "gpt-2" and summary["vocab_size"] == len(tok)
    assert any("gpt-2" in n for n in notes)


def test_chat_template_argument_replaces_the_tokenizers(tmp_path, tiny_model):
    path, *_ = write(tmp_path, tiny_model, "f16", chat_template="{{ messages[0]['content'] }}")
    assert read(path)[0]["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"


def test_qwen2_biases_qwen2_pre_tokenizer_and_f16_fallback(tmp_path, qwen2):
    path, summary, notes, model, tok, config = write(tmp_path, qwen2, "q8_0")
    fields, tensors = read(path)
    names = expected_names(2, bias=True)
    assert set(tensors) == set(names.values())
    assert tensors["blk.0.attn_q.bias"].tensor_type.name == "F32"
    assert fields["general.architecture"] == "qwen2" and fields["tokenizer.ggml.pre"] == "qwen2"
    assert "qwen2.rope.dimension_count" not in fields  # llama.cpp derives it, as the converter
    # down_proj rows are 72 long: not whole 32-blocks, so F16 (logged), the rest Q8_0
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == "F16"
    assert tensors["blk.0.ffn_up.weight"].tensor_type.name == "Q8_0"
    assert summary["fallbacks"] == 2 and any("ffn_down" in n and "F16" in n for n in notes)
    state = model.state_dict()
    for hf, gg in names.items():  # no Q/K permutation for qwen2
        check_tensor(tensors[gg], state[hf])


def test_qwen3_norms_and_head_dim(tmp_path, qwen3):
    path, summary, notes, model, tok, config = write(tmp_path, qwen3, "bf16")
    fields, tensors = read(path)
    names = expected_names(2, qk_norm=True)
    assert set(tensors) == set(names.values())
    assert fields["general.architecture"] == "qwen3"
    assert fields["qwen3.attention.key_length"] == 32 == fields["qwen3.attention.value_length"]
    assert (
        fields["qwen3.attention.head_count"] == 4 and fields["qwen3.attention.head_count_kv"] == 2
    )
    state = model.state_dict()
    for hf, gg in names.items():
        check_tensor(tensors[gg], state[hf])


def test_tied_embeddings_write_no_output_tensor(tmp_path):
    folder = build_qwen2(tmp_path / "tied", tie=True, intermediate_size=128)
    path, summary, notes, model, tok, config = write(tmp_path, folder, "q4_0")
    fields, tensors = read(path)
    assert "output.weight" not in tensors and set(tensors) == set(
        expected_names(2, tied=True, bias=True).values()
    )
    # llama.cpp reads token_embd as the output then, so it gets the output's 8 bits
    assert tensors["token_embd.weight"].tensor_type.name == "Q8_0"


def test_sentencepiece_style_llama_vocab(tmp_path, spm):
    path, summary, notes, model, tok, config = write(tmp_path, spm, "f16")
    fields, tensors = read(path)
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.pre"] == "default"
    tokens, types, scores = (
        fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "scores")
    )
    assert len(tokens) == len(types) == len(scores) == len(tok)
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3 + 0x41] == "<0x41>"
    assert types[0] == 2 and types[1] == 3 and types[3 + 0x41] == 6  # unknown, control, byte
    assert "▁" in "".join(tokens)  # pieces keep the word-start marker
    merges = json.loads((spm / "tokenizer.json").read_text())["model"]["merges"]
    first, later = ("".join(m) for m in (merges[0], merges[-1]))
    assert scores[tokens.index(first)] > scores[tokens.index(later)]  # merge order = score order
    assert (
        fields["tokenizer.ggml.bos_token_id"] == 1
        and fields["tokenizer.ggml.add_bos_token"] is True
    )
    assert fields["tokenizer.ggml.unknown_token_id"] == 0
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.add_space_prefix"] is False  # Metaspace prepend_scheme "first"
    assert "tokenizer.ggml.merges" not in fields


def test_sentencepiece_style_without_byte_tokens_is_refused(tmp_path):
    """llama.cpp spells unknown characters in byte tokens and aborts when there are none."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from studio.core.export.gguf_vocab import VocabError, read_vocab

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.train_from_iterator(["hello world"] * 5, trainers.BpeTrainer(special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    tok.save_pretrained(tmp_path)
    with pytest.raises(VocabError, match="no <0x00>..<0xFF> byte tokens"):
        read_vocab(tmp_path, len(tok), {})


def test_rope_scaling_metadata(tmp_path, tiny_model):
    model, tok, config = load(tiny_model)
    state = model.state_dict()

    def fields_for(rope):
        cfg = dict(config, rope_parameters=dict(rope_theta=500000.0, **rope))
        path = tmp_path / "rope.gguf"
        write_gguf(path, state, cfg, tiny_model, "f32", chat_template=None)
        return read(path)

    fields, _ = fields_for({"rope_type": "linear", "factor": 2.0})
    assert (
        fields["llama.rope.scaling.type"] == "linear" and fields["llama.rope.scaling.factor"] == 2.0
    )
    assert fields["llama.rope.freq_base"] == 500000.0
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    fields, _ = fields_for(yarn)
    assert fields["llama.rope.scaling.type"] == "yarn"
    assert fields["llama.rope.scaling.original_context_length"] == 256
    llama3 = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}
    fields, tensors = fields_for(dict(llama3, low_freq_factor=1.0, high_freq_factor=4.0))
    factors = np.asarray(tensors["rope_freqs.weight"].data)
    assert factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == 8.0
    with pytest.raises(ExportError, match="'longrope'"):
        fields_for({"rope_type": "longrope", "factor": 2.0})


def test_unsupported_architecture_is_one_clear_sentence(tmp_path, tiny_model):
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    with pytest.raises(
        ExportError, match=r"GPT2LMHeadModel architecture; it supports LlamaForCausalLM"
    ):
        check_supported(gpt2)
    assert check_supported({"model_type": "mistral"}) == "llama"
    with pytest.raises(ExportError, match="GPT2LMHeadModel"):
        write_gguf(tmp_path / "x.gguf", {}, gpt2, tiny_model, "f16", chat_template=None)
    assert not (tmp_path / "x.gguf").exists()


def test_progress_per_tensor_and_cancel_removes_the_file(tmp_path, tiny_model):
    calls = []
    path, summary, *_ = write(
        tmp_path, tiny_model, "f16", progress=lambda d, t: calls.append((d, t))
    )
    n = summary["tensors"]
    assert calls == [(i, n) for i in range(1, n + 1)]
    calls.clear()
    with pytest.raises(Cancelled):
        write(
            tmp_path,
            tiny_model,
            "q8_0",
            progress=lambda d, t: calls.append(d),
            cancel=lambda: len(calls) >= 3,
        )
    assert len(calls) == 3 and not (tmp_path / f"{tiny_model.name}-q8_0.gguf").exists()


def test_unknown_pre_tokenizer_is_refused_unless_chosen(tmp_path, tiny_model):
    folder = tmp_path / "odd"
    shutil.copytree(tiny_model, folder)
    tok_file = folder / "tokenizer.json"
    tok = json.loads(tok_file.read_text())
    tok["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": "\\s+"},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            },
        ],
    }
    tok_file.write_text(json.dumps(tok))
    with pytest.raises(
        ExportError, match=r"pre-tokenizer \(Split \+ ByteLevel\) is not one Studio recognises"
    ):
        write(tmp_path, folder, "f16")
    path, summary, notes, *_ = write(tmp_path, folder, "f16", pre_tokenizer="gpt2")
    assert read(path)[0]["tokenizer.ggml.pre"] == "gpt-2" == summary["pre_tokenizer"]
    assert any("'gpt-2', as chosen" in n and "not recognised" in n for n in notes)


def test_pre_tokenizers_recognised_from_their_definition():
    def seq(*parts):
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": list(parts)}}

    def split(regex):
        return {
            "type": "Split",
            "pattern": {"Regex": regex},
            "behavior": "Isolated",
            "invert": False,
        }

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    assert recognise_pre_tokenizer(seq(split(LLAMA3_REGEX), byte_level)) == "llama-bpe"
    assert recognise_pre_tokenizer(seq(split(QWEN2_REGEX), byte_level)) == "qwen2"
    digits = {"type": "Digits", "individual_digits": True}
    assert recognise_pre_tokenizer(seq(digits, dict(byte_level, use_regex=True))) == "smollm"
    prefixed = {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}
    assert recognise_pre_tokenizer({"pre_tokenizer": prefixed}) is None


# --- the LoRA GGUF --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(folder)
    return folder, peft_model


def lora_weights(peft_model, layer, proj, ab):
    mod = getattr(peft_model.base_model.model.model.layers[layer].self_attn, proj)
    return getattr(mod, f"lora_{ab}")["default"].weight.detach().numpy()


def test_lora_gguf_names_shapes_alpha_and_permuted_b(tmp_path, tiny_model, adapter):
    folder, peft_model = adapter
    config = json.loads((tiny_model / "config.json").read_text())
    summary = write_lora_gguf(tmp_path / "a.gguf", folder, config, "f32")
    fields, tensors = read(tmp_path / "a.gguf")
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0 and fields["general.architecture"] == "llama"
    want = {f"blk.{i}.attn_{x}.weight.lora_{ab}" for i in (0, 1) for x in "qv" for ab in "ab"}
    assert set(tensors) == want and summary["tensors"] == 8 and summary["modules"] == 4
    # ggml order: lora_a is {n_embd, rank}, lora_b is {rank, n_out}
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [64, 4]
    assert list(tensors["blk.0.attn_q.weight.lora_b"].shape) == [4, 64]
    assert list(tensors["blk.0.attn_v.weight.lora_b"].shape) == [4, 32]
    n_head = config["num_attention_heads"]
    for i in (0, 1):
        for x in "qv":
            a = np.asarray(tensors[f"blk.{i}.attn_{x}.weight.lora_a"].data)
            b = np.asarray(tensors[f"blk.{i}.attn_{x}.weight.lora_b"].data)
            assert np.array_equal(a, lora_weights(peft_model, i, f"{x}_proj", "A"))
            hf_b = lora_weights(peft_model, i, f"{x}_proj", "B")
            if x == "q":  # B's rows are Q's output rows: permuted like the weight
                assert not np.array_equal(b, hf_b)
                b = unpermute_qk(b, n_head, n_head)
            assert np.array_equal(b, hf_b)


def test_lora_q8_0_keeps_short_rows_in_f16(tmp_path, tiny_model, adapter):
    folder, _ = adapter
    config = json.loads((tiny_model / "config.json").read_text())
    notes: list[str] = []
    write_lora_gguf(tmp_path / "a.gguf", folder, config, "q8_0", log=notes.append)
    _, tensors = read(tmp_path / "a.gguf")
    assert tensors["blk.0.attn_q.weight.lora_a"].tensor_type.name == "Q8_0"
    assert tensors["blk.0.attn_q.weight.lora_b"].tensor_type.name == "F16"  # rows of rank 4
    assert any("lora_b" in n and "F16" in n for n in notes)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "saves whole modules"),
    ],
)
def test_lora_refuses_what_llama_cpp_cannot_apply(tmp_path, tiny_model, adapter, change, message):
    folder = tmp_path / "adapter"
    shutil.copytree(adapter[0], folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(dict(cfg, **change)))
    config = json.loads((tiny_model / "config.json").read_text())
    with pytest.raises(ExportError, match=message):
        write_lora_gguf(tmp_path / "a.gguf", folder, config)


def test_lora_refuses_a_target_without_a_gguf_name(tmp_path, tiny_model, adapter):
    from safetensors.torch import save_file

    folder = tmp_path / "adapter"
    shutil.copytree(adapter[0], folder)
    prefix = "base_model.model.model.layers.0.self_attn.rotary"
    save_file(
        {
            f"{prefix}.lora_A.weight": torch.zeros(4, 64),
            f"{prefix}.lora_B.weight": torch.zeros(64, 4),
        },
        folder / "adapter_model.safetensors",
    )
    config = json.loads((tiny_model / "config.json").read_text())
    with pytest.raises(ExportError, match="targets rotary, which has no GGUF name"):
        write_lora_gguf(tmp_path / "a.gguf", folder, config)


# --- llama.cpp itself -----------------------------------------------------------------------


def llama_cpp_logits(path, ids, text=None, lora=None):
    """llama.cpp's logits for `ids` (and its own tokens for `text`).

    An F32 KV cache makes llama.cpp's arithmetic comparable to transformers' float32 to ~1e-6
    (its default F16 cache alone gives ~1e-4). n_batch=1: this llama-cpp-python build crashes
    evaluating batches on Q8_0/Q4_0 tensors on some CPUs, and the tests keep to one path.
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    kwargs = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=128,
        n_batch=1,
        logits_all=True,
        verbose=False,
        type_k=0,
        type_v=0,
        **kwargs,
    )
    tokens = llm.tokenize(text.encode(), add_bos=True, special=True) if text else None
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    llm.close()
    return tokens, logits


@pytest.mark.parametrize("which", ["tiny_model", "qwen2", "qwen3", "spm"])
def test_llama_cpp_tokenises_and_answers_like_transformers(tmp_path, which, request):
    pytest.importorskip("llama_cpp")
    folder = request.getfixturevalue(which)
    path, summary, notes, model, tok, config = write(tmp_path, folder, "f32")
    ids = tok(CHAT)["input_ids"]
    tokens, logits = llama_cpp_logits(path, ids, CHAT)
    assert tokens == ids
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(logits - hf).max() < 1e-4


def test_llama_cpp_applies_the_lora_gguf_like_peft(tmp_path, tiny_model, adapter):
    pytest.importorskip("llama_cpp")
    folder, peft_model = adapter
    model, tok, config = load(tiny_model)
    write_gguf(
        tmp_path / "base.gguf", model.state_dict(), config, tiny_model, "f32", chat_template=None
    )
    write_lora_gguf(tmp_path / "lora.gguf", folder, config, "f32")
    ids = tok(CHAT)["input_ids"]
    _, logits = llama_cpp_logits(tmp_path / "base.gguf", ids, lora=tmp_path / "lora.gguf")
    with torch.no_grad():
        hf = peft_model(torch.tensor([ids])).logits[0].numpy()
        base = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(hf - base).max() > 0.1  # the adapter changes the answer visibly
    assert np.abs(logits - hf).max() < 1e-4
