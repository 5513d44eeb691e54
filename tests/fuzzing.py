"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): example counts, checks, strategies.

In the normal suite each harness runs a bounded number of examples (all of them together take
a few seconds). A longer soak run, by hand, raises every count at once:

    STUDIO_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz_data.py tests/test_fuzz_files.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from studio.core.data.records import ROLES, Dataset, Record

SOAK = int(os.environ.get("STUDIO_FUZZ_EXAMPLES", "0") or 0)
"""When set, every harness runs this many examples instead of its own bounded count."""


def fuzz(examples: int):
    """Hypothesis settings for one harness: `examples` in the suite, SOAK in a soak run."""
    return settings(
        max_examples=SOAK or examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# ------------------------------------------------------------------ what "valid" means


def assert_valid_record(rec: Record, max_line: int | None = None) -> None:
    """A kept record is one training sample in the normal form, with text a tokenizer takes."""
    assert isinstance(rec, Record)
    assert isinstance(rec.line, int) and rec.line >= 1, rec
    if max_line is not None:
        assert rec.line <= max_line, (rec.line, max_line)
    if rec.messages is None:
        assert type(rec.text) is str and rec.text.strip(), rec
        rec.text.encode("utf-8")  # no lone surrogates: the tokenizer refuses those
        return
    assert rec.text is None
    msgs = rec.messages
    assert type(msgs) is list and msgs, rec
    for i, m in enumerate(msgs):
        assert type(m) is dict and set(m) == {"role", "content"}, m
        assert m["role"] in ROLES and type(m["content"]) is str, m
        m["content"].encode("utf-8")
        if m["role"] == "system":
            assert i == 0, msgs
        if m["role"] == "assistant":
            assert m["content"].strip(), msgs
    assert any(m["role"] == "user" for m in msgs), msgs
    assert msgs[-1]["role"] == "assistant", msgs


def assert_valid_dataset(ds: Dataset, max_line: int | None = None) -> None:
    """Every kept record valid; every problem placed and explained; both in file order."""
    assert isinstance(ds, Dataset)
    assert ds.records, "a Dataset is only returned with at least one record"
    for rec in ds.records:
        assert_valid_record(rec, max_line)
    for p in ds.problems:
        assert isinstance(p.line, int) and p.line >= 1, p
        if max_line is not None:
            assert p.line <= max_line, (p, max_line)
        assert type(p.message) is str and p.message.strip(), p
        assert type(p.raw) is str and len(p.raw) <= 2001, len(p.raw)
    lines = [r.line for r in ds.records]
    assert lines == sorted(lines), lines
    problem_lines = [p.line for p in ds.problems]
    assert problem_lines == sorted(problem_lines), problem_lines


def kept(ds: Dataset) -> list:
    """The kept samples without their line numbers, to compare two imports."""
    return [r.text if r.messages is None else r.messages for r in ds.records]


def differs_by_at_most(with_bad: list, without: list, inserted=None) -> bool:
    """with_bad is `without`, or `without` with one more sample (the inserted record)."""
    if with_bad == without:
        return True
    if len(with_bad) != len(without) + 1:
        return False
    return any(
        with_bad[:i] + with_bad[i + 1 :] == without
        and (inserted is None or with_bad[i] == inserted)
        for i in range(len(with_bad))
    )


# ------------------------------------------------------------------ strategies

# Text a person writes: any Unicode but NUL and surrogates, never blank.
words = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=24,
).filter(lambda s: s.strip())

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Records that look almost right: the known keys, with values of any JSON type.
near_records = st.dictionaries(
    st.sampled_from(
        [
            "instruction",
            "input",
            "output",
            "system",
            "history",
            "text",
            "messages",
            "conversations",
            "role",
            "content",
            "from",
            "value",
        ]  # fmt: skip
    ),
    json_values,
    max_size=4,
)


def deep(depth: int, opener: str = "[") -> str:
    """A value nested `depth` levels deep (closed, so it is valid JSON)."""
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "1" + closer * depth
