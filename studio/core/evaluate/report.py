"""report.json: what was measured, on what, with which settings; and reading it back.

Version 1 layout:
  name, created, seconds, base_model, device
  data        {source, path, records, examples, skipped, seq_len, summary}
  generation  the GenerationSettings used (greedy) and max_new_tokens
  models      [{key, kind, adapter, loss, perplexity, tokens, examples, exact_match, contains,
                rouge_l, ended_turn, answered, judge}], the base first
  samples     [{prompt, messages, reference, answers: {key: {text, finish_reason, tokens,
                exact_match, contains, rouge_l, judge?}}}]
  judge       {status: off|ok|failed|skipped, url, model, message, note}
  lm_eval     {status: off|ok|failed|skipped, tasks, message, results: {key: {task: {...}}}}
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from studio.core.evaluate import metrics

VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
JUDGE_NOTE = (
    "Scores from an LLM judge are one model's opinion of another's answers, not a "
    "measurement: read them beside the answers."
)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def model_row(entry, loss_sum: float, tokens: int, examples: int, answers: list[dict]) -> dict:
    mean_loss = loss_sum / tokens if tokens else None
    judged = [a.get("judge", {}).get("score") for a in answers]
    return {
        "key": entry.key,
        "kind": "run" if entry.adapter_name else "base",
        "adapter": entry.adapter_path,
        "loss": _finite(mean_loss),
        "perplexity": _finite(metrics.perplexity(mean_loss)) if mean_loss is not None else None,
        "tokens": tokens,
        "examples": examples,
        "exact_match": metrics.mean(a["exact_match"] for a in answers),
        "contains": metrics.mean(a["contains"] for a in answers),
        "rouge_l": _finite(metrics.mean(a["rouge_l"] for a in answers)),
        "ended_turn": sum(a["finish_reason"] == "stop" for a in answers),
        "answered": len(answers),
        "judge": metrics.mean(judged) if any(s is not None for s in judged) else None,
    }


def build_report(
    opts, runs, session, data, stats, seq_len, prompts, settings, losses, answers, judge, lm_eval
) -> dict:
    from studio.core.evaluate.measure import settings_record

    models = []
    for entry in session.entries:
        loss_sum, tokens, n_examples = losses[entry.key]
        models.append(model_row(entry, loss_sum, tokens, n_examples, answers.get(entry.key, [])))
    samples = [
        {
            "prompt": s.prompt,
            "messages": s.messages,
            "reference": s.reference,
            "answers": {key: got[i] for key, got in answers.items()},
        }
        for i, s in enumerate(prompts)
    ]
    return {
        "version": VERSION,
        "name": opts.name or "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": 0.0,
        "base_model": runs[0].base_model,
        "device": str(session.device),
        "data": {
            "source": data.source,
            "path": data.path,
            "records": len(data.records),
            "examples": stats.kept,
            "skipped": data.skipped,
            "seq_len": seq_len,
            "summary": stats.summary(seq_len),
        },
        "generation": settings_record(settings),
        "models": models,
        "samples": samples,
        "judge": dict(judge, note=JUDGE_NOTE),
        "lm_eval": lm_eval,
    }


def write_report(folder: Path, report: dict) -> None:
    from studio.core.evaluate.html import render_html

    folder = Path(folder)
    report = dict(report, name=report.get("name") or folder.name.removeprefix(".tmp-"))
    text = json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False)
    (folder / REPORT_JSON).write_text(text + "\n", encoding="utf-8")
    (folder / REPORT_HTML).write_text(render_html(report), encoding="utf-8")


def read_report(folder: str | Path) -> dict:
    """FOLDER/report.json, or {} when there is none or it cannot be read."""
    try:
        data = json.loads((Path(folder) / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("models"), list) else {}


def past_reports(run_dir: str | Path) -> list[Path]:
    """RUN/eval/*/ folders holding a report, newest first."""
    home = Path(run_dir) / "eval"
    if not home.is_dir():
        return []
    found = [p for p in home.iterdir() if p.is_dir() and (p / REPORT_JSON).is_file()]
    return sorted(found, key=lambda p: (p / REPORT_JSON).stat().st_mtime, reverse=True)


def best(models: list[dict], metric: str, lower: bool = False) -> str | None:
    """The key of the model alone best on `metric` (None when none has it, or on a tie)."""
    have = [m for m in models if m.get(metric) is not None]
    if not have:
        return None
    top = (min if lower else max)(m[metric] for m in have)
    winners = [m["key"] for m in have if m[metric] == top]
    return winners[0] if len(winners) == 1 else None  # a tie has no best
