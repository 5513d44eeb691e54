"""Chat templates and loss masking, including a hypothesis property test."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.core.data.examples import IGNORE, build_examples, render_marked, tokenize_segments
from studio.core.data.records import Record
from studio.core.data.templates import resolve_template
from studio.core.errors import ConfigError
from studio.core.models import load_tokenizer

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi 你好"},
    {"role": "assistant", "content": "Hello 🙂"},
    {"role": "user", "content": "Again?"},
    {"role": "assistant", "content": "Yes."},
]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def tok_nt(tiny_model_no_template):
    return load_tokenizer(str(tiny_model_no_template))


def trained_text(example, tokenizer):
    return tokenizer.decode(
        [t for t, lab in zip(example.input_ids, example.labels, strict=True) if lab != IGNORE]
    )


@pytest.mark.parametrize("name", ["auto", "chatml", "alpaca", "llama2"])
def test_rendered_text_matches_segments_and_masks_assistant_turns(tok, name):
    template = resolve_template(tok, name)
    ex = tokenize_segments(tok, template.segments(CONV))
    eot = {
        "auto": "<|im_end|>",
        "chatml": "<|im_end|>",
        "alpaca": "<|im_end|>",
        "llama2": " <|im_end|>",
    }[name]
    assert trained_text(ex, tok) == "Hello 🙂" + eot + "Yes." + eot
    full = tok.decode(ex.input_ids)
    assert "You are terse." in full and "Hi 你好" in full and "Again?" in full


def test_tokenizer_template_renders_like_apply_chat_template(tok):
    template = resolve_template(tok, "auto")
    text = "".join(t for t, _ in template.segments(CONV))
    assert text == tok.apply_chat_template(CONV, tokenize=False)
    assert template.prompt(CONV[:2]) == tok.apply_chat_template(
        CONV[:2], tokenize=False, add_generation_prompt=True
    )


def test_chatml_builtin_equals_tokenizer_chatml(tok):
    a = "".join(t for t, _ in resolve_template(tok, "chatml").segments(CONV))
    assert a == tok.apply_chat_template(CONV, tokenize=False)


def test_no_template_and_none_chosen_is_a_clear_error(tok_nt):
    with pytest.raises(ConfigError, match="no chat template.*chatml, alpaca or llama2"):
        resolve_template(tok_nt, "auto")
    assert resolve_template(tok_nt, "alpaca").name == "alpaca"


def test_alpaca_template_has_instruction_and_response_sections(tok):
    text = "".join(t for t, _ in resolve_template(tok, "alpaca").segments(CONV[:3]))
    assert text.startswith("You are terse.\n\n### Instruction:\nHi 你好\n\n### Response:\nHello 🙂")


def test_llama2_template_places_system_inside_first_instruction(tok):
    text = "".join(t for t, _ in resolve_template(tok, "llama2").segments(CONV))
    assert text.startswith(
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi 你好 [/INST] Hello 🙂 <|im_end|>"
    )
    assert "[INST] Again? [/INST] Yes." in text


def test_train_on_all_labels_every_token(tok):
    ex = tokenize_segments(tok, resolve_template(tok, "chatml").segments(CONV), train_on="all")
    assert ex.labels == ex.input_ids


def test_text_records_train_on_everything_with_eos(tok):
    examples, _ = build_examples([Record(1, text="plain text 🙂")], tok, None, seq_len=64)
    assert trained_text(examples[0], tok) == "plain text 🙂<|im_end|>"


def test_overlong_examples_are_truncated_or_dropped_and_counted(tok):
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}]
    recs = [Record(1, messages=long), Record(2, messages=CONV)]
    template = resolve_template(tok, "chatml")
    kept, stats = build_examples(recs, tok, template, seq_len=64, overlong="truncate")
    assert len(kept) == 2 and stats.truncated == 1 and stats.dropped == 0
    assert len(kept[0]) == 64 and stats.lengths[0] > 64
    kept, stats = build_examples(recs, tok, template, seq_len=64, overlong="drop")
    assert [e.line for e in kept] == [2] and stats.dropped == 1 and stats.dropped_lines == [1]
    assert "1 longer than 64 tokens dropped" in stats.summary(64)


def test_truncation_that_removes_every_label_drops_the_example(tok):
    long_prompt = [
        {"role": "user", "content": "word " * 200},
        {"role": "assistant", "content": "ok"},
    ]
    kept, stats = build_examples(
        [Record(5, messages=long_prompt)], tok, resolve_template(tok, "chatml"), seq_len=32
    )
    assert kept == [] and stats.no_labels == 1 and stats.dropped_lines == [5]


def test_render_marked_splits_trained_runs(tok):
    ex = tokenize_segments(tok, resolve_template(tok, "chatml").segments(CONV[1:3]))
    runs = render_marked(ex, tok)
    assert [r for r, trained in runs if trained] == ["Hello 🙂<|im_end|>"]
    assert "".join(r for r, _ in runs) == tok.decode(ex.input_ids)


text_st = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="<>|"),
    min_size=1,
    max_size=30,
)


@st.composite
def conversations(draw):
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(text_st)})
    for _ in range(draw(st.integers(1, 4))):
        msgs.append({"role": "user", "content": draw(text_st)})
        msgs.append({"role": "assistant", "content": draw(text_st)})
    return msgs


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(conv=conversations(), name=st.sampled_from(["auto", "chatml", "alpaca", "llama2"]))
def test_labelled_tokens_decode_to_assistant_contents_plus_end_markers(tok, conv, name):
    template = resolve_template(tok, name)
    ex = tokenize_segments(tok, template.segments(conv))
    eot = {"llama2": " <|im_end|>"}.get(name, "<|im_end|>")
    expected = "".join(m["content"] + eot for m in conv if m["role"] == "assistant")
    assert trained_text(ex, tok) == expected
    assert len(ex.input_ids) == len(ex.labels)


def _sentencepiece_like_tokenizer():
    """A Llama-2-style tokenizer: words start with the ▁ marker, one is added at the start."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    texts = [m["content"] for m in CONV] * 20 + ["user assistant system"] * 20
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"]),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["byte-level BPE", "SentencePiece-like"])
def test_the_prompt_trained_on_is_the_prompt_generation_sees(tok, kind):
    tokenizer = tok if kind == "byte-level BPE" else _sentencepiece_like_tokenizer()
    template = resolve_template(tokenizer, "chatml")
    ex = tokenize_segments(tokenizer, template.segments(CONV))
    # Before the first answer: exactly the tokens generation feeds the model for that prompt
    # (segment-by-segment tokenising gave each piece a word-start marker it never has there).
    prompt = tokenizer(template.prompt(CONV[:2]), add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(prompt)] == prompt
    assert ex.labels[len(prompt) - 1] == IGNORE and ex.labels[len(prompt)] != IGNORE
    # The answer goes on from the prompt as generation does: the tokens of prompt + answer.
    with_answer = template.prompt(CONV[:2]) + CONV[2]["content"]
    whole = tokenizer(with_answer, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(whole)] == whole
    answer = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert tokenizer.decode(answer).startswith("Hello")  # no word-start space before it
