"""Padding-free batches: several examples share a row, attention stays inside each example.

`pack_rows` groups examples into rows of at most `seq_len` tokens: best fit, taking the
examples in a seeded random order. Rows come out nearly full (within a few percent of sorting
by length first), and each row mixes short and long examples, so a step's loss is not a
step of only long (or only short) examples: the curve stays smooth and the gradient less
correlated. `collate` builds one batch: `input_ids`, `labels` and
`position_ids` that restart at 0 for every example. transformers reads restarting
position ids with no attention mask as packed sequences and keeps attention block-diagonal
(and variable-length flash-attention kernels use them directly on GPU).

Rows, not one long sequence: attention cost grows with the square of the row length, so
several rows of seq_len beat one long row on CPU.
"""

from __future__ import annotations

import bisect
import random

from studio.core.data.examples import IGNORE, Example


def pack_rows(lengths: list[int], seq_len: int, seed: int = 0) -> list[list[int]]:
    """Group example indices into rows whose total length is at most seq_len."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    rows: list[list[int]] = []
    # Free space of each open row, kept sorted for a best-fit search with bisect.
    free: list[tuple[int, int]] = []  # (space left, row index)
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, row = free.pop(k)
            rows[row].append(i)
            if space - n > 0:
                bisect.insort(free, (space - n, row))
        else:
            rows.append([i])
            if seq_len - n > 0:
                bisect.insort(free, (seq_len - n, len(rows) - 1))
    return rows


def single_rows(n: int) -> list[list[int]]:
    """One example a row (packing off)."""
    return [[i] for i in range(n)]


def collate(examples: list[Example], rows: list[list[int]], pad_id: int):
    """Tensors for a batch of rows, padded at the end to the longest row."""
    import torch

    width = max(sum(len(examples[i]) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            ex = examples[i]
            n = len(ex)
            ids[r, at : at + n] = torch.tensor(ex.input_ids)
            lab = torch.tensor(ex.labels)
            lab[0] = IGNORE  # never predicted from the previous example in the row
            labels[r, at : at + n] = lab
            pos[r, at : at + n] = torch.arange(n)
            at += n
        # Padding forms its own "sequence" (positions from 0), so no real token attends to it.
        pos[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def count_tokens(examples: list[Example], rows: list[list[int]]) -> int:
    return sum(len(examples[i]) for row in rows for i in row)
