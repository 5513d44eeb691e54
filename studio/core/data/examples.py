"""Records -> examples: render the template, tokenise, mask the labels, handle over-long ones.

An `Example` holds `input_ids` and `labels` of equal length; a label is -100 where the
token carries no loss. By default only assistant turns (each with its end-of-turn marker)
carry loss; `train_on="all"` trains on every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.core.data.records import Record
from studio.core.data.templates import ChatTemplate

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    line: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class ExampleStats:
    total: int = 0
    truncated: int = 0
    """Examples cut to seq_len (overlong="truncate")."""
    dropped: int = 0
    """Examples left out because they were longer than seq_len (overlong="drop")."""
    no_labels: int = 0
    """Examples left out because nothing in them carries loss after truncation."""
    lengths: list[int] = field(default_factory=list)
    """Token length of every record before truncation (for histograms)."""
    dropped_lines: list[int] = field(default_factory=list)
    template_errors: list[tuple[int, str]] = field(default_factory=list)
    """(line, the template's message) for each record the model's chat template refused to
    render (e.g. a system turn for a model without a system role); those are left out."""

    @property
    def kept(self) -> int:
        return self.total - self.dropped - self.no_labels - len(self.template_errors)

    def summary(self, seq_len: int) -> str:
        parts = [f"{self.kept} examples"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to {seq_len} tokens")
        if self.dropped:
            parts.append(f"{self.dropped} longer than {seq_len} tokens dropped")
        if self.no_labels:
            parts.append(f"{self.no_labels} with no trainable tokens left out")
        if self.template_errors:
            shown = "; ".join(f"line {line}: {msg}" for line, msg in self.template_errors[:3])
            more = len(self.template_errors) - 3
            parts.append(
                f"{len(self.template_errors)} rejected by the model's chat template and left "
                f"out ({shown}{f' and {more} more' if more > 0 else ''})"
            )
        return ", ".join(parts)


def record_segments(record: Record, template: ChatTemplate, eos: str) -> list[tuple[str, bool]]:
    if record.is_text:
        return [(record.text + eos, True)]
    return template.segments(record.messages)


def tokenize_segments(
    tokenizer, segments: list[tuple[str, bool]], train_on: str = "assistant"
) -> Example:
    return _tokenize_many(tokenizer, [segments], train_on)[0]


def _tokenize_many(
    tokenizer, records: list[list[tuple[str, bool]]], train_on: str
) -> list[Example]:
    """Tokenise records' segments: each run of segments that are all trained, or all not, as
    one text, in one batched call.

    So the prompt before an answer (system, user and the assistant header) is tokenised
    exactly as generation tokenises it; segment by segment, a SentencePiece tokenizer
    (Llama 2, Mistral) would start each piece with its word-start marker. Each answer is
    its own text, so its tokens decode exactly to the answer and its end-of-turn marker.
    """
    runs = [_merge_runs(segs) for segs in records]
    flat = [t for r in runs for t, _ in r]
    pieces = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    if flat and _marks_word_starts(tokenizer):
        _in_context(tokenizer, runs, pieces)
    out, pos = [], 0
    for r in runs:
        out.append(_join(pieces[pos : pos + len(r)], [tr for _, tr in r], train_on))
        pos += len(r)
    return out


def _marks_word_starts(tokenizer) -> bool:
    """Does a text on its own tokenise differently from the same text after a newline?

    True for SentencePiece tokenizers that put a word-start marker at the start of every
    input (Llama 2, Mistral): "Hello" alone is "▁Hello", after "\n" it is "Hello".
    Byte-level BPE (Llama 3, Qwen, GPT) says False, and pays nothing more.
    """
    cached = getattr(tokenizer, "_studio_marks_word_starts", None)
    if cached is None:
        ids = tokenizer(["a\nHello", "a\n", "Hello"], add_special_tokens=False)["input_ids"]
        cached = ids[0] != ids[1] + ids[2]
        try:
            tokenizer._studio_marks_word_starts = cached
        except AttributeError:
            pass
    return cached


def _in_context(tokenizer, runs, pieces) -> None:
    """Re-tokenise each answer after the prompt before it, as generation goes on from it.

    The answer's tokens are those of prompt + answer beyond the prompt's own tokens, when the
    prompt's tokens come first unchanged (else the answer keeps its own tokenisation).
    """
    jobs, pos = [], 0
    for r in runs:
        for i, (_text, trained) in enumerate(r):
            if trained and i > 0:
                jobs.append((pos + i - 1, pos + i, r[i - 1][0] + r[i][0]))
        pos += len(r)
    if not jobs:
        return
    joined = tokenizer([text for _, _, text in jobs], add_special_tokens=False)["input_ids"]
    for (before, at, _), ids in zip(jobs, joined, strict=True):
        head = pieces[before]
        if ids[: len(head)] == head:
            pieces[at] = ids[len(head) :]


def _merge_runs(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    merged: list[tuple[str, bool]] = []
    for text, trained in segments:
        if merged and merged[-1][1] == trained:
            merged[-1] = (merged[-1][0] + text, trained)
        elif text:
            merged.append((text, trained))
    return merged


def _join(pieces, trained_flags, train_on: str) -> Example:
    ids: list[int] = []
    labels: list[int] = []
    for piece, trained in zip(pieces, trained_flags, strict=True):
        ids += piece
        labels += piece if (trained or train_on == "all") else [IGNORE] * len(piece)
    return Example(ids, labels)


def build_examples(
    records: list[Record],
    tokenizer,
    template: ChatTemplate,
    seq_len: int,
    train_on: str = "assistant",
    overlong: str = "truncate",
    chunk: int = 512,
) -> tuple[list[Example], ExampleStats]:
    """Tokenise every record; over-long ones are truncated or dropped and counted.

    A record the model's own chat template refuses (its Jinja code raises, e.g. "System role
    not supported" or "roles must alternate") is left out and listed in
    `stats.template_errors` with its line; the others are unaffected.
    """
    from jinja2.exceptions import TemplateError

    eos = tokenizer.eos_token or ""
    stats = ExampleStats(total=len(records))
    examples: list[Example] = []
    for start in range(0, len(records), chunk):
        batch = []
        segs = []
        for r in records[start : start + chunk]:
            try:
                segs.append(record_segments(r, template, eos))
            except TemplateError as e:
                stats.template_errors.append((r.line, str(e) or type(e).__name__))
                stats.dropped_lines.append(r.line)
                continue
            batch.append(r)
        # One batched call is much faster than a call per record.
        for record, ex in zip(batch, _tokenize_many(tokenizer, segs, train_on), strict=True):
            ex.line = record.line
            stats.lengths.append(len(ex))
            if len(ex) > seq_len:
                if overlong == "drop":
                    stats.dropped += 1
                    stats.dropped_lines.append(record.line)
                    continue
                stats.truncated += 1
                ex.input_ids, ex.labels = ex.input_ids[:seq_len], ex.labels[:seq_len]
            # The first token is never predicted (nothing comes before it), so a label on it
            # is meaningless; an example with no other label cannot teach anything.
            if not any(x != IGNORE for x in ex.labels[1:]):
                stats.no_labels += 1
                stats.dropped_lines.append(record.line)
                continue
            examples.append(ex)
    return examples, stats


def render_marked(example: Example, tokenizer) -> list[tuple[str, bool]]:
    """Decode an example into runs of text, each marked whether it carries loss."""
    runs: list[tuple[str, bool]] = []
    current: list[int] = []
    flag = None
    for tok, lab in zip(example.input_ids, example.labels, strict=True):
        trained = lab != IGNORE
        if flag is not None and trained != flag:
            runs.append((tokenizer.decode(current), flag))
            current = []
        current.append(tok)
        flag = trained
    if current:
        runs.append((tokenizer.decode(current), bool(flag)))
    return runs
