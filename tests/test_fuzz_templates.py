"""Fuzzed chat templates: the built-in ones and a model's own Jinja template, on any
conversation, and hostile template sources (from a stranger's tokenizer_config.json).

Properties: the segments always concatenate to the full rendering; exactly the assistant
turns (and their end-of-turn marker) are trained; the model's own ChatML template marks the
same characters as the built-in ChatML; and a template that breaks never escapes as anything
but a per-record template error (data import) or a StudioError (chat).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studio.core.data.examples import build_examples
from studio.core.data.records import Record
from studio.core.data.templates import Alpaca, ChatML, Llama2, TokenizerTemplate
from studio.core.errors import ConfigError, StudioError
from tests.fuzzing import fuzz

# Contents a person may write, including text that looks like template syntax or markers.
content = st.text(max_size=20) | st.sampled_from(
    ["{{ messages }}", "{% endfor %}", "<|im_end|>", "<|im_start|>assistant\n", "</s>", "\n", " "]
)
answer = content.filter(lambda s: s.strip())


@st.composite
def conversations(draw) -> list[dict]:
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(content)})
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": "user", "content": draw(content)})
        msgs.append({"role": "assistant", "content": draw(answer)})
    return msgs


def _chars(segments) -> list[tuple[str, bool]]:
    """Per character: (character, trained), so two segmentations can be compared."""
    return [(c, trained) for text, trained in segments for c in text]


BUILT_IN = {
    "chatml": (ChatML(), "<|im_end|>"),
    "alpaca": (Alpaca("</s>"), "</s>"),
    "llama2": (Llama2("<s>", "</s>"), " </s>"),
}


@fuzz(100)
@given(name=st.sampled_from(sorted(BUILT_IN)), msgs=conversations())
def test_built_in_templates_train_exactly_the_answers(name, msgs):
    template, eot = BUILT_IN[name]
    segments = template.segments(msgs)
    trained = [t for t, tr in segments if tr]
    assert trained == [m["content"] + eot for m in msgs if m["role"] == "assistant"]
    full = "".join(t for t, _ in segments)
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            # What chat sends before this answer is what training saw before it.
            prompt = template.prompt(msgs[:i])
            assert full.startswith(prompt), (prompt, full)
            assert full[len(prompt) :].startswith(m["content"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from studio.core.models import load_tokenizer

    return load_tokenizer(str(tiny_model))


@fuzz(60)
@given(msgs=conversations())
def test_model_template_marks_what_the_built_in_chatml_marks(tokenizer, msgs):
    """The tiny model's own template is ChatML in Jinja: the same text, the same trained
    characters, whatever the contents say."""
    own = TokenizerTemplate(tokenizer)
    segments = own.segments(msgs)
    assert "".join(t for t, _ in segments) == tokenizer.apply_chat_template(msgs, tokenize=False)
    assert _chars(segments) == _chars(ChatML().segments(msgs))


HOSTILE = [
    "{{ messages + 1 }}",
    "{{ 1 / 0 }}",
    "{% for m in messages %}{{ m.nope.deeper }}{% endfor %}",
    "{{ messages[99]['content'] }}",
    "{{ raise_exception('no system role') }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% for m in messages %}{{ m['content'] | int }}{% endfor %}",
    "{{ messages.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{% if %}",
    "{{",
    "{% for m in messages %}",
    "{{ m['content'] }",
    "",
]


@st.composite
def template_sources(draw):
    from studio.core.tiny import CHATML_TEMPLATE

    base = draw(st.sampled_from([CHATML_TEMPLATE, ""]))
    junk = st.text(st.sampled_from("{}%#[]()'\"|.+-x "), max_size=12)
    snippet = draw(st.sampled_from(HOSTILE) | st.sampled_from(HOSTILE) | junk)
    at = draw(st.integers(0, len(base)))
    return base[:at] + snippet + base[at:]


@fuzz(80)
@given(source=template_sources(), msgs=conversations())
def test_a_broken_template_is_a_per_record_error_never_a_crash(tokenizer, source, msgs):
    tokenizer.chat_template = source
    try:
        template = TokenizerTemplate(tokenizer)
        examples, stats = build_examples([Record(7, msgs)], tokenizer, template, seq_len=256)
    except ConfigError as e:  # "rewrites earlier turns": the whole template is unusable
        assert "data.template" in e.message
        return
    assert len(examples) + len(stats.template_errors) + stats.no_labels + stats.dropped == 1
    for line, message in stats.template_errors:
        assert line == 7 and message.strip()


@fuzz(50)
@given(source=template_sources(), msgs=conversations())
def test_a_broken_template_in_chat_is_a_studio_error(tokenizer, source, msgs):
    from studio.core.infer import ChatModel

    tokenizer.chat_template = source
    chat = ChatModel(model=None, tokenizer=tokenizer, template=TokenizerTemplate(tokenizer),
                     name="x", base_path="x")  # fmt: skip
    try:
        ids = chat.prompt_ids(msgs[:-1])
    except StudioError as e:
        assert e.field == "messages" and e.message.strip()
        return
    assert all(type(i) is int for i in ids)


@pytest.fixture(autouse=True)
def _restore_template(request):
    """The module's tokenizer is shared: put its own template back after each test."""
    yield
    if "tokenizer" in request.fixturenames:
        from studio.core.tiny import CHATML_TEMPLATE

        request.getfixturevalue("tokenizer").chat_template = CHATML_TEMPLATE
