"""The measurements on one model: loss on the answer tokens and greedy answers to prompts.

Loss uses the trainer's own pieces (build_examples for the masks, LossFn and evaluate_sums for
the sums), so an evaluation's loss on a run's validation split is the eval_loss its training
logged. Answers use the chat's generation loop and stop rules.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict

from studio.core.data.records import Record
from studio.core.generation import CancelToken, GenerationSettings


def greedy_settings(max_new_tokens: int) -> GenerationSettings:
    """Greedy: the same answer every time, so two reports can be compared answer by answer."""
    return GenerationSettings(
        temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens, seed=0
    )


def settings_record(settings: GenerationSettings) -> dict:
    return dict(asdict(settings), greedy=settings.temperature == 0)


def build(records: list[Record], tokenizer, template, seq_len: int):
    """Examples with loss on the answers only (whatever the run trained on), over-long ones
    cut to seq_len: (examples, stats)."""
    from studio.core.data.examples import build_examples

    return build_examples(
        records, tokenizer, template, seq_len, train_on="assistant", overlong="truncate"
    )


def loss_rows(examples) -> list[list[int]]:
    """One example a row, shortest first: batches of like lengths pad least."""
    return [[i] for i in sorted(range(len(examples)), key=lambda i: len(examples[i]))]


def loss_sums(loss_fn, examples, rows, batch_size: int, pad_id: int, device) -> tuple[float, int]:
    """(sum of answer-token losses, answer tokens) over `rows` (the trainer's evaluate_sums)."""
    from studio.core.train import evaluate_sums

    return evaluate_sums(
        loss_fn, examples, rows, batch_size, pad_id, device, contextlib.nullcontext
    )


def answer(session, model, template, messages: list[dict], settings, cancel: CancelToken) -> dict:
    """A greedy answer: {text, finish_reason, tokens} (with `error` when it could not be made:
    a template that refuses the conversation, a prompt longer than the context)."""
    from studio.core.generation import PromptTooLong, generate

    try:
        text = template.prompt(messages)
    except Exception as e:  # the model's own Jinja template raising on this conversation
        return {"text": "", "finish_reason": "error", "tokens": 0,
                "error": f"the chat template refused this conversation: {e}"}  # fmt: skip
    ids = session.tokenizer(text, add_special_tokens=False)["input_ids"]
    try:
        gen = generate(
            model,
            session.tokenizer,
            ids,
            settings,
            stop_ids=session.stop_ids(template),
            stop_strings=template.stop_strings,
            context_length=session.context_length(),
            cancel=cancel,
        )
        for _ in gen:
            pass
    except PromptTooLong as e:
        return {"text": "", "finish_reason": "error", "tokens": 0, "error": e.message}
    return {
        "text": gen.text.strip(),
        "finish_reason": gen.finish_reason,
        "tokens": gen.completion_tokens,
    }
