"""Inference core: same tokens as model.generate, cancel, stop strings, multi-byte pieces,
adapter/checkpoint/run-folder loading, training's template, settings, quantized loading."""

import threading

import pytest
import torch

from studio.core.config import DataConfig, ModelConfig, RunConfig
from studio.core.data.templates import ChatML, TokenizerTemplate
from studio.core.errors import ConfigError, ModelError
from studio.core.generation import (
    CancelToken,
    GenerationSettings,
    IncrementalDecoder,
    PromptTooLong,
    StopMatcher,
)
from studio.core.infer import chat_template, find_adapter, load_chat_model
from studio.core.models import load_tokenizer

GREEDY = GenerationSettings(temperature=0, max_new_tokens=24)
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


def make_run(base: str, run_dir, template: str = "auto", scale: float = 1.0):
    """A run folder with a random (non-zero) LoRA adapter and one checkpoint, in seconds."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False,
        ),
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(scale * 50)  # big enough that greedy answers change
    peft.save_pretrained(run_dir / "adapter")
    peft.save_pretrained(run_dir / "checkpoints" / "step-000004")
    RunConfig(
        model=ModelConfig(path=str(base)),
        data=DataConfig(path="x.jsonl", template=template),
        output=str(run_dir),
    ).save(run_dir / "run.yaml")
    return run_dir


@pytest.fixture(scope="module")
def base(tiny_model):
    return load_chat_model(str(tiny_model))


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    return make_run(str(tiny_model), tmp_path_factory.mktemp("run") / "myrun")


def test_greedy_matches_model_generate_token_for_token(base):
    ids = base.prompt_ids(HELLO)
    gen = base.chat(HELLO, GREEDY)
    text = "".join(gen)
    out = base.model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[
        0, len(ids) :
    ].tolist()
    eos = base.tokenizer.eos_token_id
    expected = out[: out.index(eos)] if eos in out else out
    assert gen.completion_ids == expected
    assert text == base.tokenizer.decode(expected, skip_special_tokens=True)
    assert gen.finish_reason == ("stop" if eos in out else "length")
    assert gen.prompt_tokens == len(ids) and gen.ttft_s > 0 and gen.tokens_per_s > 0


def test_prompt_uses_the_tokenizer_template(base):
    assert isinstance(base.template, TokenizerTemplate)
    text = base.tokenizer.decode(base.prompt_ids(HELLO))
    assert text == "<|im_start|>user\nHello, how are you today?<|im_end|>\n<|im_start|>assistant\n"


def test_seed_makes_sampling_repeatable(base):
    s = GenerationSettings(temperature=1.0, top_p=0.9, top_k=40, seed=7, max_new_tokens=16)
    a, b = "".join(base.chat(HELLO, s)), "".join(base.chat(HELLO, s))
    c = "".join(base.chat(HELLO, GenerationSettings(temperature=1.0, seed=8, max_new_tokens=16)))
    assert a == b and a != c


def test_repetition_penalty_changes_greedy_output(base):
    plain = base.chat(HELLO, GenerationSettings(temperature=0, max_new_tokens=40))
    penal = base.chat(
        HELLO, GenerationSettings(temperature=0, max_new_tokens=40, repetition_penalty=3.0)
    )
    list(plain), list(penal)
    assert plain.completion_ids != penal.completion_ids
    # A strong penalty keeps greedy decoding from repeating a token straight away.
    assert all(a != b for a, b in zip(penal.completion_ids, penal.completion_ids[1:], strict=False))


def test_cancel_stops_within_a_token(base):
    cancel = CancelToken()
    gen = base.chat(
        HELLO,
        GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=200, seed=3),
        cancel,
    )
    seen, at_cancel = 0, None
    for _ in gen:
        seen += 1
        if seen == 3:
            cancel.cancel()
            at_cancel = gen.completion_tokens
    assert gen.finish_reason == "cancelled"
    assert gen.completion_tokens == at_cancel  # not one token more


def test_cancel_from_another_thread(base):
    gen = base.chat(
        HELLO,
        GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=100000, seed=3),
    )
    timer = threading.Timer(0.3, gen.stop)
    timer.start()
    list(gen)
    timer.join()
    assert gen.finish_reason == "cancelled" and 0 < gen.completion_tokens < 100000


def test_max_new_tokens_and_context_limit(base):
    gen = base.chat(
        HELLO, GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, seed=0, max_new_tokens=5)
    )
    list(gen)
    assert gen.completion_tokens <= 5
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(PromptTooLong, match="context holds 1024"):
        base.chat(long, GREEDY)


def test_pieces_never_split_a_character(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    text = "你好，世界！今天天气很好。🙂🚀 ok 😀 naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tok)
    pieces = [dec.add(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len([p for p in pieces if p]) > 3  # it does stream, not all at the end


def test_stop_string_is_held_back_and_cut():
    m = StopMatcher(["### Instruction:", "STOP"])
    out = [m.feed(p) for p in ["Hello ", "wor", "ld ##", "# Instr", "uction: more"]]
    assert "".join(out) == "Hello world " and m.stopped
    m = StopMatcher(["STOP"])
    out = [m.feed(p) for p in ["ab", "S", "T", "x"]] + [m.flush()]
    assert out[:3] == ["ab", "", ""] and "".join(out) == "abSTx" and not m.stopped


def test_extra_stop_string_ends_generation(base):
    first = "".join(base.chat(HELLO, GREEDY))
    assert len(first) > 4
    stop = first[2:4]
    gen = base.chat(HELLO, GenerationSettings(temperature=0, max_new_tokens=24, stop=[stop]))
    assert "".join(gen) == first[: first.index(stop)] and gen.finish_reason == "stop"


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="generation.temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ConfigError, match="generation.top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(ConfigError, match="generation.max_new_tokens"):
        GenerationSettings(max_new_tokens=0)


def test_find_adapter_accepts_run_adapter_and_checkpoint_folders(run_dir, tiny_model, tmp_path):
    for path in (run_dir, run_dir / "adapter", run_dir / "checkpoints" / "step-000004"):
        info = find_adapter(path)
        assert (info.folder / "adapter_config.json").is_file()
        assert info.run_dir == run_dir.resolve() and info.base_model == str(tiny_model)
    with pytest.raises(ModelError, match="no such folder"):
        find_adapter(tmp_path / "missing")
    with pytest.raises(ModelError, match="no adapter_config.json"):
        find_adapter(tmp_path)


def test_adapter_changes_answers_and_checkpoint_loads(base, run_dir):
    tuned = load_chat_model(adapter=str(run_dir))  # base model read from run.yaml
    assert tuned.name == "myrun" and tuned.adapter_path.endswith("adapter")
    a = base.chat(HELLO, GREEDY)
    b = tuned.chat(HELLO, GREEDY)
    list(a), list(b)
    assert a.completion_ids != b.completion_ids
    ckpt = load_chat_model(base.base_path, run_dir / "checkpoints" / "step-000004")
    assert ckpt.name == "myrun/step-000004"
    c = ckpt.chat(HELLO, GREEDY)
    list(c)
    assert c.completion_ids == b.completion_ids  # the checkpoint holds the same weights


def test_template_follows_run_yaml(tiny_model, tiny_model_no_template, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    assert isinstance(chat_template(tok, "auto"), TokenizerTemplate)
    assert chat_template(tok, "alpaca").name == "alpaca"
    bare = load_tokenizer(str(tiny_model_no_template))
    assert isinstance(chat_template(bare, ""), ChatML)
    run = make_run(str(tiny_model), tmp_path / "r", template="alpaca")
    model = load_chat_model(adapter=str(run / "adapter"))
    assert model.template.name == "alpaca"
    assert "### Instruction:" in model.template.stop_strings


def test_adapter_for_another_model_is_a_clear_error(tiny_model, run_dir, tmp_path):
    from studio.core.tiny import build_model

    other = build_model(tmp_path / "wide", hidden_size=96, heads=4, kv_heads=2)
    with pytest.raises(ModelError, match="does not fit this base model"):
        load_chat_model(str(other), run_dir)


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_loading_generates(tiny_model, quant):
    bnb = pytest.importorskip("bitsandbytes")
    model = load_chat_model(str(tiny_model), quant=quant)
    kind = bnb.nn.Linear8bitLt if quant == "8bit" else bnb.nn.Linear4bit
    assert model.quant == quant and any(isinstance(m, kind) for m in model.model.modules())
    gen = model.chat(HELLO, GenerationSettings(temperature=0, max_new_tokens=6))
    list(gen)
    assert gen.completion_tokens == 6 or gen.finish_reason == "stop"


def _answer(model, messages=HELLO):
    with model.lock:
        gen = model.chat(messages, GREEDY)
        list(gen)
    return gen.completion_ids


def test_models_on_one_base_share_its_weights_and_answer_as_if_alone(tiny_model, tmp_path):
    one = make_run(str(tiny_model), tmp_path / "one", scale=1.0)
    two = make_run(str(tiny_model), tmp_path / "two", scale=-1.0)
    alone = {
        "base": _answer(load_chat_model(str(tiny_model))),
        "one": _answer(load_chat_model(adapter=str(one))),
        "two": _answer(load_chat_model(adapter=str(two))),
    }
    assert len({tuple(v) for v in alone.values()}) == 3  # three different answers

    # Base first, then an adapter on it, then a second adapter: one copy of the weights.
    base = load_chat_model(str(tiny_model))
    tuned = load_chat_model(str(tiny_model), one, share_with=base)
    other = load_chat_model(adapter=str(two), share_with=tuned)
    assert base.shared is tuned.shared is other.shared and base.lock is other.lock
    weights = {p.data_ptr() for m in (base, tuned, other) for n, p in m.model.named_parameters()
               if "lora_" not in n}  # fmt: skip
    assert len(weights) == len(
        [n for n, _ in base.shared.net.named_parameters() if "lora_" not in n]
    )
    # Whatever the order of asking, each answers with its own adapter (or none).
    for name, model in [("one", tuned), ("base", base), ("two", other), ("base", base),
                        ("one", tuned), ("two", other)]:  # fmt: skip
        assert _answer(model) == alone[name], name

    # Closing one drops its adapter; the others carry on.
    other.close()
    assert list(tuned.shared.peft.peft_config) == [tuned.adapter_name]
    assert _answer(tuned) == alone["one"] and _answer(base) == alone["base"]

    # A newly loaded adapter answers with itself first, whatever answered before it (peft
    # loads an adapter without switching to it): after the base, after another adapter.
    tuned2 = load_chat_model(adapter=str(two), share_with=base)
    assert _answer(tuned2) == alone["two"]
    assert _answer(base) == alone["base"]
    tuned.close()
    again = load_chat_model(adapter=str(one), share_with=base)
    assert _answer(again) == alone["one"] and _answer(tuned2) == alone["two"]
    assert set(base.shared.peft.peft_config) == {again.adapter_name, tuned2.adapter_name}
    again.close(), tuned2.close()
    assert len(base.shared.peft.peft_config) == 0 and _answer(base) == alone["base"]

    # Adapter first, then the base alone on it.
    first = load_chat_model(adapter=str(one))
    plain = load_chat_model(str(tiny_model), share_with=first)
    assert plain.shared is first.shared
    assert _answer(plain) == alone["base"] and _answer(first) == alone["one"]


def test_no_sharing_across_different_settings_or_models(tiny_model, tiny_model_no_template):
    base = load_chat_model(str(tiny_model))
    assert load_chat_model(str(tiny_model), quant="8bit", share_with=base).shared is not base.shared
    assert load_chat_model(str(tiny_model_no_template), share_with=base).shared is not base.shared


def test_a_misfit_adapter_leaves_the_shared_base_untouched(tiny_model, run_dir, tmp_path):
    from studio.core.tiny import build_model

    other = build_model(tmp_path / "wide", hidden_size=96, heads=4, kv_heads=2)
    base = load_chat_model(str(other))
    before = _answer(base)
    with pytest.raises(ModelError, match="does not fit this base model .its layer"):
        load_chat_model(str(other), run_dir, share_with=base)
    assert base.shared.peft is None and _answer(base) == before


def test_a_template_refusing_the_conversation_is_a_studio_error(tmp_path):
    """A Gemma-style template that raises on a system turn: a clear StudioError naming
    'messages', not a jinja2 TemplateError."""
    from studio.core.errors import StudioError
    from studio.core.tiny import CHATML_TEMPLATE, build_model

    refusing = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML_TEMPLATE
    )
    model = load_chat_model(str(build_model(tmp_path / "model", chat_template=refusing)))
    with pytest.raises(
        StudioError, match="refuses this conversation: System role not supported"
    ) as e:
        model.chat([{"role": "system", "content": "Be brief."}, *HELLO], GREEDY)
    assert e.value.field == "messages"
    assert model.prompt_ids(HELLO)  # a conversation it accepts still renders


def test_a_pickle_adapter_gets_its_own_base(tiny_model, tmp_path):
    # Its fit cannot be checked before injection, so it never goes into shared weights.
    run = make_run(str(tiny_model), tmp_path / "run")
    adapter = run / "adapter"
    from safetensors.torch import load_file

    torch.save(load_file(str(adapter / "adapter_model.safetensors")), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    base = load_chat_model(str(tiny_model))
    tuned = load_chat_model(str(tiny_model), adapter, share_with=base)
    assert tuned.shared is not base.shared and base.shared.peft is None
    assert _answer(tuned) != _answer(base)
