"""Duplicate records: exact copies (same normalised text) and near copies (MinHash LSH).

What is compared is the text a person would call the record's content: every turn as
"role: content" (a pair: its prompt turns and both answers; a text record: its text),
normalised by case folding and collapsing runs of whitespace (so "Hello  World" and
"hello world" are exact copies; punctuation is kept, so "2+2" and "2*2" are not).

Near copies are found over word n-grams (default 2) with one-permutation MinHash and LSH bands
(studio.core.data.minhash, numpy only), and every candidate pair is checked with its
estimated Jaccard similarity before it joins a cluster (union-find). A cluster keeps its
first record by line; the rest are duplicates. System turns are left out of the near-copy
comparison: a long system prompt shared by every record would otherwise make distinct
conversations look alike (they still count for exact copies).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from studio.core.data.records import Record
from studio.core.events import Event, Progress

CHUNK = 20_000
"""Records normalised between two progress events (and cancel checks)."""


class Cancelled(Exception):
    """Raised inside the work when its cancel token is set."""


def is_cancelled(token: Any) -> bool:
    """A studio CancelToken (`.cancelled`), a threading.Event (`.is_set()`) or None."""
    if token is None:
        return False
    flag = getattr(token, "cancelled", None)
    return bool(flag) if flag is not None else bool(token.is_set())


@dataclass
class Cluster:
    """Records that are copies of one another; `lines[0]` (the first in the file) is kept."""

    lines: list[int]
    kind: str
    """"exact": all the same after normalising; "near": at least one pair differs a little."""
    similarity: float = 1.0
    """The lowest estimated Jaccard similarity of the pairs that joined it (1.0: exact)."""
    index: list[int] = field(default_factory=list)
    """The members' positions in the records searched (lines need not be unique: all the
    records of a one-line JSON array start on line 1)."""

    @property
    def keep(self) -> int:
        return self.lines[0]

    @property
    def drop(self) -> list[int]:
        return self.lines[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "kind": self.kind, "similarity": round(self.similarity, 4)}


@dataclass
class DedupeOptions:
    threshold: float = 0.8
    """Estimated Jaccard similarity of word n-grams from which two records are near copies."""
    num_perm: int = 128
    """MinHash bins: more estimate the similarity more precisely, and cost more."""
    ngram: int = 2
    """Words per shingle. Each changed word changes `ngram` shingles, so short records
    (most chat data) need small n-grams; 1 (word sets) would ignore order, and "5 - 3" and
    "3 - 5" would be copies."""
    exact_only: bool = False

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"the threshold must be in (0, 1]; got {self.threshold}.")
        if not 2 <= self.num_perm <= 8192:
            raise ValueError(f"num_perm must be between 2 and 8192; got {self.num_perm}.")
        if self.ngram < 1:
            raise ValueError(f"ngram must be at least 1; got {self.ngram}.")


@dataclass
class _Groups:
    """Union-find over record indices; `note` remembers the weakest join of each root."""

    parent: list[int]
    low: dict[int, float] = field(default_factory=dict)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(self, i: int, j: int, sim: float) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            a, b = min(a, b), max(a, b)  # the root is the earliest record
            self.parent[b] = a
            self.low[a] = min(sim, self.low.get(a, 1.0), self.low.pop(b, 1.0))
        else:
            self.low[a] = min(sim, self.low.get(a, 1.0))


def record_text(record: Record, system: bool = True) -> str:
    """The record's content as one string: "role: content" per turn, or the text."""
    if record.text is not None:
        return record.text
    turns = [
        f"{m['role']}: {m['content']}"
        for m in record.messages or ()
        if system or m["role"] != "system"
    ]
    if record.chosen is not None:
        turns.append(f"chosen: {record.chosen}")
        turns.append(f"rejected: {record.rejected}")
    return "\n".join(turns)


def normalise(text: str) -> str:
    """Case-folded, words separated by single spaces."""
    return " ".join(text.casefold().split())


def duplicate_events(
    records: list[Record], options: DedupeOptions | None = None, cancel: Any = None
) -> Iterator[Event]:
    """Find duplicates among `records`, yielding Progress; returns the clusters (by first line).

    Use with `clusters = yield from duplicate_events(...)`, or call `find_duplicates`.
    """
    opts = options or DedupeOptions()
    total = len(records)
    clock = _Clock("normalising", total)
    exact: list[str] = []
    near: list[str] = []
    skip: dict[str, int] = {}  # system prompt -> characters it takes in a normalised text
    for start in range(0, total, CHUNK):
        if is_cancelled(cancel):
            raise Cancelled()
        part = records[start : start + CHUNK]
        keys = [" ".join(record_text(r).casefold().split()) for r in part]
        exact += keys
        if not opts.exact_only:
            near += [_without_system(r, k, skip) for r, k in zip(part, keys, strict=True)]
        yield clock.at(min(total, start + CHUNK))

    groups = _Groups(list(range(total)))
    first: dict[str, int] = {}
    for i, key in enumerate(exact):
        j = first.setdefault(key, i)
        if j != i:
            groups.join(j, i, 1.0)
    del exact
    exact_roots = {groups.find(i) for i in range(total) if groups.find(i) != i}
    if not opts.exact_only and total > 1:
        # Only one record of each exact group is hashed: its copies cannot add a near copy.
        reps = sorted(first.values())
        pairs = yield from _near_pairs([near[i] for i in reps], opts, cancel)
        for a, b, sim in pairs:
            groups.join(reps[a], reps[b], sim)
    return _clusters(records, groups, exact_roots)


def find_duplicates(
    records: list[Record],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 2,
    exact_only: bool = False,
    cancel: Any = None,
) -> list[Cluster]:
    """The clusters of copies among `records`, in order of their first line."""
    opts = DedupeOptions(threshold, num_perm, ngram, exact_only)
    gen = duplicate_events(records, opts, cancel)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _without_system(record: Record, key: str, skip: dict[str, int]) -> str:
    """The normalised text `key` less its leading system turn, if any.

    Normalising is the costliest step, so the system turn's normalised length is computed
    once per distinct system prompt (most files repeat one) and cut off the whole text's.
    """
    messages = record.messages
    if not messages or messages[0]["role"] != "system":
        return key
    content = messages[0]["content"]
    n = skip.get(content)
    if n is None:
        n = skip[content] = len(normalise(f"system: {content}")) + 1
    return key[n:] or key


def _near_pairs(texts: list[str], opts: DedupeOptions, cancel: Any) -> Iterator[Event]:
    """Yields Progress while hashing; returns [(i, j, similarity)] of verified near pairs."""
    from studio.core.data import minhash

    clock = _Clock("hashing", len(texts))
    sig = None
    for done, result in minhash.signatures(texts, opts.num_perm, opts.ngram):
        sig = result if result is not None else sig
        if is_cancelled(cancel):
            raise Cancelled()
        yield clock.at(done)
    yield Progress(0, 1, "comparing")
    bands, rows = minhash.lsh_params(opts.threshold, opts.num_perm)
    pairs = minhash.candidate_pairs(sig, bands, rows)
    sims = minhash.similarity(sig, pairs)
    keep = sims >= opts.threshold
    yield Progress(1, 1, "comparing")
    return [(int(a), int(b), float(s)) for (a, b), s in zip(pairs[keep], sims[keep], strict=True)]


def _clusters(records: list[Record], groups: _Groups, exact_roots: set[int]) -> list[Cluster]:
    members: dict[int, list[int]] = {}
    for i in range(len(records)):
        root = groups.find(i)
        if root != i or root in groups.low:
            members.setdefault(root, []).append(i)
    out = []
    for root, idx in members.items():
        if len(idx) < 2:
            continue
        low = groups.low.get(root, 1.0)
        exact = root in exact_roots and low >= 1.0 and _all_exact(records, idx)
        kind = "exact" if exact else "near"
        out.append(Cluster([records[i].line for i in idx], kind, low, idx))
    out.sort(key=lambda c: c.index[0])
    return out


def _all_exact(records: list[Record], idx: list[int]) -> bool:
    key = normalise(record_text(records[idx[0]]))
    return all(normalise(record_text(records[i])) == key for i in idx[1:])


class _Clock:
    """Progress with an ETA from the average time per item so far in the stage."""

    def __init__(self, stage: str, total: int):
        self.stage, self.total, self.start = stage, max(1, total), time.monotonic()

    def at(self, done: int) -> Progress:
        per = (time.monotonic() - self.start) / max(1, done)
        return Progress(done, self.total, self.stage, eta_s=round(per * (self.total - done), 2))
