"""What `studio data inspect` reports about a data file, as one plain dict.

The CLI prints it (as text or JSON) and the GUI can show the same dict. With a model the
report adds token-length statistics and the first example as rendered for training, split
into runs that do or do not carry loss.
"""

from __future__ import annotations

import math
import os
from typing import Any

from studio.core.data.formats import load_dataset
from studio.core.data.records import Dataset
from studio.core.errors import ConfigError


def describe(ds: Dataset) -> dict[str, Any]:
    """Format, counts and every problem of an imported dataset."""
    return {
        "path": ds.path,
        "format": ds.format,
        "records": ds.kept,
        "skipped": ds.skipped,
        "columns": ds.columns,
        "available_columns": ds.available_columns,
        "errors": [{"line": p.line, "field": p.field, "message": p.message} for p in ds.problems],
    }


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (q in [0, 1])."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def length_stats(lengths: list[int], seq_len: int) -> dict[str, Any]:
    s = sorted(lengths)
    return {
        "count": len(s),
        "min": s[0] if s else 0,
        "mean": round(sum(s) / len(s), 1) if s else 0.0,
        "p50": percentile(s, 0.5),
        "p95": percentile(s, 0.95),
        "max": s[-1] if s else 0,
        "seq_len": seq_len,
        "over_seq_len": sum(1 for x in s if x > seq_len),
    }


def token_report(
    ds: Dataset,
    model: str,
    seq_len: int = 512,
    template: str = "auto",
    train_on: str = "assistant",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Token-length statistics over every kept record, and the first example marked up."""
    from studio.core.data.examples import build_examples, render_marked
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer

    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    # Plain-text records never touch the chat template, so a model without one is fine there.
    needs_template = any(not r.is_text for r in ds.records)
    chat_template = resolve_template(tokenizer, template) if needs_template else None
    pairs = ds.format == "pairs"
    if pairs:  # two examples a pair (prompt + chosen, prompt + rejected), loss on the answers
        from studio.core.data.pairs import build_pair_examples

        examples, stats = build_pair_examples(ds.records, tokenizer, chat_template, seq_len)
    else:
        examples, stats = build_examples(
            ds.records, tokenizer, chat_template, seq_len, train_on=train_on, overlong="truncate"
        )
    report: dict[str, Any] = {
        "model": model,
        "tokens": length_stats(stats.lengths, seq_len),
        "truncated": stats.truncated,
        "no_trainable_tokens": getattr(stats, "no_labels", 0),
        "template_errors": [
            {
                "line": line,
                "field": "template",
                "message": f"the model's chat template rejects this record: {message}",
            }
            for line, message in stats.template_errors
        ],
        "example": None,
    }
    if examples:
        first = examples[0]
        report["example"] = {
            "line": first.line,
            "tokens": len(first.input_ids),
            "segments": [
                {"text": t, "trained": bool(tr)} for t, tr in render_marked(first, tokenizer)
            ],
        }
        if pairs:  # the same pair's rejected side; token statistics count both sides
            report["example"]["rejected_segments"] = [
                {"text": t, "trained": bool(tr)} for t, tr in render_marked(examples[1], tokenizer)
            ]
    return report


def inspect_file(
    path: str | os.PathLike,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    model: str | None = None,
    seq_len: int = 512,
    template: str = "auto",
    train_on: str = "assistant",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The whole report; raises DataError when the file has no usable record."""
    ds = load_dataset(path, format=format, columns=columns)
    report = describe(ds)
    if model:
        report.update(token_report(ds, model, seq_len, template, train_on, trust_remote_code))
        rejected = report["template_errors"]
        if rejected:
            # A record the chat template cannot render cannot be trained on: count it as
            # skipped and list it with the import's problems, in line order.
            report["records"] -= len(rejected)
            report["skipped"] += len(rejected)
            report["errors"] = sorted(report["errors"] + rejected, key=lambda e: e["line"])
            if report["records"] == 0:
                raise ConfigError(
                    f"data.template: the model's chat template rejects every record of "
                    f"{os.path.basename(str(path))} ({_first(rejected)}); choose a built-in "
                    "template (chatml, alpaca or llama2) or change the records.",
                    field="data.template",
                )
    return report


def _first(errors: list[dict], limit: int = 3) -> str:
    text = "; ".join(f"line {e['line']}: {e['message']}" for e in errors[:limit])
    return text + (f" (and {len(errors) - limit} more)" if len(errors) > limit else "")
