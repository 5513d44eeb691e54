"""Preference pairs -> examples, rows and batches for one forward pass over both answers.

A pair record becomes two examples, prompt + chosen and prompt + rejected, kept next to each
other: pair k is examples 2k (chosen) and 2k + 1 (rejected). Labels are on the final answer
and its end-of-turn marker only (never on the prompt, not even on earlier assistant turns of
a multi-turn prompt, whatever `train_on` says): the log-probability compared is that of the
answer given the prompt. If either side cannot be used (too long with overlong="drop",
nothing left to learn after truncation, refused by the chat template), the pair goes.

`seq_len` bounds each of the two sequences, as TRL's max_length does; a row holds whole pairs
(both sides together, positions restarting at each), packed by the pair's total length into
rows of up to 2 x seq_len tokens, so a row always fits at least one pair and padding is only
what the longest row of a batch leaves. `collate` adds `seq_index`: for each token, which
sequence of the batch it belongs to (2j chosen and 2j + 1 rejected of the batch's pair j;
-1 for padding), so one forward pass gives every sequence's summed log-probability.
"""

from __future__ import annotations

from pathlib import Path

from studio.core.data.examples import IGNORE, Example, ExampleStats, _tokenize_many
from studio.core.data.packing import collate as collate_rows
from studio.core.data.packing import pack_rows
from studio.core.data.records import Record
from studio.core.data.templates import ChatTemplate
from studio.core.errors import ConfigError


class PairStats(ExampleStats):
    """ExampleStats counted in pairs (total, dropped, no_labels, template_errors); `lengths`
    holds each sequence's token length (two a pair)."""

    def summary(self, seq_len: int) -> str:
        return super().summary(seq_len).replace(" examples", " pairs", 1)


def answer_segments(record: Record, answer: str, template: ChatTemplate) -> list[tuple[str, bool]]:
    """The prompt with `answer` as the assistant's reply; only that reply is trained."""
    segments = template.segments(record.messages + [{"role": "assistant", "content": answer}])
    last = max((i for i, (_, trained) in enumerate(segments) if trained), default=-1)
    return [(text, trained and i == last) for i, (text, trained) in enumerate(segments)]


def build_pair_examples(
    records: list[Record], tokenizer, template: ChatTemplate, seq_len: int,
    overlong: str = "truncate", chunk: int = 256,
) -> tuple[list[Example], PairStats]:  # fmt: skip
    """Examples 2k, 2k + 1 for each usable pair (see the module docstring), and the counts."""
    from jinja2.exceptions import TemplateError

    stats = PairStats(total=len(records))
    examples: list[Example] = []
    for start in range(0, len(records), chunk):
        kept, segs = [], []
        for r in records[start : start + chunk]:
            try:
                sides = [
                    answer_segments(r, r.chosen, template),
                    answer_segments(r, r.rejected, template),
                ]
            except TemplateError as e:
                stats.template_errors.append((r.line, str(e) or type(e).__name__))
                stats.dropped_lines.append(r.line)
                continue
            kept.append(r)
            segs += sides
        # One batched tokenizer call for the chunk, as build_examples does.
        tokenized = _tokenize_many(tokenizer, segs, "assistant")
        for k, record in enumerate(kept):
            pair = _fit(tokenized[2 * k : 2 * k + 2], record.line, seq_len, overlong, stats)
            examples += pair
    return examples, stats


def as_answers(records: list[Record]) -> list[Record]:
    """Pairs as conversations answered by their chosen answer (what evaluation compares a
    model's answer with); other records as they are."""
    return [
        Record(r.line, [*r.messages, {"role": "assistant", "content": r.chosen}])
        if r.is_pair
        else r
        for r in records
    ]


def pair_lengths(stats: PairStats) -> list[int]:
    """A token length per pair: its longer side (seq_len bounds each side)."""
    n = stats.lengths
    return [max(n[i], n[i + 1]) for i in range(0, len(n) - 1, 2)]


def _fit(
    pair: list[Example], line: int, seq_len: int, overlong: str, stats: PairStats
) -> list[Example]:
    """The pair as it will be trained, or [] (counted) when it cannot be."""
    stats.lengths += [len(e) for e in pair]
    if any(len(e) > seq_len for e in pair):
        if overlong == "drop":
            stats.dropped += 1
            stats.dropped_lines.append(line)
            return []
        stats.truncated += 1
        for e in pair:
            e.input_ids, e.labels = e.input_ids[:seq_len], e.labels[:seq_len]
    # The first token is never predicted; a side with no other label has no log-probability.
    if any(not any(x != IGNORE for x in e.labels[1:]) for e in pair):
        stats.no_labels += 1
        stats.dropped_lines.append(line)
        return []
    for e in pair:
        e.line = line
    return pair


def pair_rows(lengths: list[int], seq_len: int, seed: int, packing: bool) -> list[list[int]]:
    """Rows of example indices holding whole pairs (2k then 2k + 1, in that order)."""
    n = len(lengths) // 2
    if packing:
        totals = [lengths[2 * k] + lengths[2 * k + 1] for k in range(n)]
        groups = pack_rows(totals, 2 * seq_len, seed)
    else:
        groups = [[k] for k in range(n)]
    return [[i for k in group for i in (2 * k, 2 * k + 1)] for group in groups]


def collate_pairs(examples: list[Example], rows: list[list[int]], pad_id: int) -> dict:
    """packing.collate's batch plus `seq_index` (see the module docstring)."""
    import torch

    batch = collate_rows(examples, rows, pad_id)
    seq = torch.full_like(batch["input_ids"], -1)
    s = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(examples[i])
            seq[r, at : at + n] = s
            at, s = at + n, s + 1
    batch["seq_index"] = seq
    return batch


def sequence_labels(batch) -> tuple:
    """(mask of predicted positions that carry a label, their sequence index, sequence count)."""
    target_seq = batch["seq_index"][:, 1:]
    mask = batch["labels"][:, 1:] != IGNORE
    count = int(batch["seq_index"].max()) + 1
    return mask, target_seq[mask], count


def check_mode(mode: str, split) -> None:
    """A pair file for a mode that does not train on pairs, or the reverse: one sentence that
    names --mode (a DPO run on answers alone, or SFT on pairs, would teach nothing meant)."""
    from studio.core.config import PAIR_MODES

    for ds in (split.train, split.val_file):
        if ds is None:
            continue
        name, pairs = Path(ds.path).name, ds.format == "pairs"
        if mode in PAIR_MODES and not pairs:
            raise ConfigError(
                f"train.mode: {mode} trains on preference pairs (records with prompt, chosen "
                f"and rejected) and {name} is in the {ds.format} format; train it with "
                "--mode sft, or give a file of pairs",
                field="train.mode",
            )
        if mode not in PAIR_MODES and pairs:
            raise ConfigError(
                f"train.mode: {name} holds preference pairs (prompt, chosen, rejected), which "
                f"train with --mode dpo, orpo or simpo, not {mode}",
                field="train.mode",
            )
