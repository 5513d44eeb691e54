"""report.html: one self-contained page (inline CSS and SVG, no script, no external asset).

A metrics table with the best value of each column in bold, a bar plot, the judge's and
lm-eval's sections, and every prompt with each model's answer diffed against the reference.
Every text from the data or a model is escaped: an answer is never markup.
"""

from __future__ import annotations

import difflib
from html import escape

COLORS = ("#8a8f98", "#2f6fdf", "#e07b1a", "#2a9d5c", "#b8439b", "#c9a227", "#5a4fcf")
"""The base's grey first, then one colour a run (also in the plot)."""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2129;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#69707a}.small{font-size:12px}
table{border-collapse:collapse;width:100%}th,td{padding:6px 8px;border-bottom:1px solid #e3e5e8;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.best{font-weight:700}.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.sample{border:1px solid #e3e5e8;border-radius:6px;padding:10px 12px;margin:12px 0}
.prompt{font-weight:600;white-space:pre-wrap}.ref{white-space:pre-wrap;color:#3d4450}
.answer{white-space:pre-wrap}.same{background:#dff3e4}.extra{background:#fbe3e1}
ins.miss{text-decoration:none;border-bottom:1px dashed #2a9d5c;color:#2a9d5c}
.tag{display:inline-block;font-size:11px;padding:1px 6px;border-radius:9px;margin-right:4px;background:#eef0f3}
.yes{background:#dff3e4}.no{background:#fbe3e1}
.judge{border-left:3px solid #c9a227;padding-left:8px;margin-top:4px}
.note{background:#fff8e1;border:1px solid #f0d98a;border-radius:6px;padding:6px 10px}
.fail{background:#fdecea;border:1px solid #f1b7b1;border-radius:6px;padding:6px 10px}
"""


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def colour(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _metrics_table(report: dict) -> str:
    from studio.core.evaluate.report import best

    models = report["models"]
    has_judge = any(m.get("judge") is not None for m in models)
    cols = [("loss", "Loss", True, _num), ("perplexity", "Perplexity", True, lambda x: _num(x, 2)),
            ("exact_match", "Exact match", False, _pct), ("contains", "Contains", False, _pct),
            ("rouge_l", "ROUGE-L", False, _num)]  # fmt: skip
    if has_judge:
        cols.append(("judge", "LLM judge (1–10)", False, lambda x: _num(x, 1)))
    winners = {key: best(models, key, lower) for key, _, lower, _ in cols}
    head = "".join(f"<th>{t}</th>" for _, t, _, _ in cols)
    rows = []
    for i, m in enumerate(models):
        cells = "".join(
            f'<td class="num{" best" if winners[k] == m["key"] and len(models) > 1 else ""}">'
            f"{fmt(m.get(k))}</td>"
            for k, _, _, fmt in cols
        )
        ended = f"{m.get('ended_turn', 0)} of {m.get('answered', 0)}"
        rows.append(
            f'<tr><td><span class="swatch" style="background:{colour(i)}"></span>'
            f'{escape(m["key"])}<div class="muted small">{escape(m.get("adapter") or "base model, adapters off")}</div></td>'
            f"{cells}<td class=\"num\">{ended}</td><td class=\"num\">{m.get('tokens', 0)}</td></tr>"
        )  # fmt: skip
    return (
        f"<table><tr><th>Model</th>{head}<th>Ended its turn</th><th>Answer tokens</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def plot_svg(models: list[dict]) -> str:
    """Two panels of horizontal bars: loss (lower is better) and the answer metrics (0-1)."""
    bar, gap, label_w, width = 14, 4, 150, 520
    panels = [("Loss on answer tokens (lower is better)", [("loss", "loss")])]
    panels.append(("Answers (higher is better)",
                   [("exact_match", "exact match"), ("contains", "contains"), ("rouge_l", "ROUGE-L")]))  # fmt: skip
    parts, x = [], 0
    for i, m in enumerate(models):  # the legend: each model's colour, as in the table
        parts.append(f'<rect x="{x}" y="2" width="10" height="10" rx="2" fill="{colour(i)}"/>'
                     f'<text x="{x + 14}" y="11" font-size="12">{escape(m["key"])}</text>')  # fmt: skip
        x += 24 + 7 * len(m["key"])
    y = 24
    for title, metrics in panels:
        top = max((m.get(k) or 0 for m in models for k, _ in metrics), default=0) or 1
        scale = 1.0 if metrics[0][0] != "loss" else top
        parts.append(
            f'<text x="0" y="{y + 14}" font-weight="600" font-size="13">{escape(title)}</text>'
        )
        y += 24
        for key, name in metrics:
            if len(metrics) > 1:
                parts.append(
                    f'<text x="0" y="{y + 11}" font-size="12" fill="#69707a">{name}</text>'
                )
            for i, m in enumerate(models):
                v = m.get(key)
                w = 0 if v is None else max(1, (width - label_w - 60) * v / scale)
                shown = (
                    "–"
                    if v is None
                    else (f"{v:.3f}" if key in ("loss", "rouge_l") else f"{100 * v:.0f}%")
                )
                if len(metrics) == 1:
                    parts.append(
                        f'<text x="0" y="{y + 11}" font-size="12">{escape(m["key"])}</text>'
                    )
                parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" rx="2" fill="{colour(i)}"/>'
                             f'<text x="{label_w + w + 6:.1f}" y="{y + 11}" font-size="11">{shown}</text>')  # fmt: skip
                y += bar + gap
            y += 6
        y += 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}" font-family="system-ui,sans-serif">{"".join(parts)}</svg>'
    )


def diff_html(answer: str, reference: str) -> str:
    """The answer word by word: words it shares with the reference in green, its own in red,
    the reference's words it lacks shown underlined where they would go."""
    if not reference.strip():
        return escape(answer) or '<span class="muted">(nothing)</span>'
    a, r = answer.split(), reference.split()
    norm = [w.lower().strip(".,!?;:") for w in a], [w.lower().strip(".,!?;:") for w in r]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, *norm, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(f'<span class="same">{escape(" ".join(a[i1:i2]))}</span>')
            continue
        if i2 > i1:
            out.append(f'<span class="extra">{escape(" ".join(a[i1:i2]))}</span>')
        if j2 > j1:
            out.append(
                f'<ins class="miss" title="in the reference">{escape(" ".join(r[j1:j2]))}</ins>'
            )
    return " ".join(out) or '<span class="muted">(nothing)</span>'


def _tags(a: dict) -> str:
    tags = []
    for key, name in (("exact_match", "exact"), ("contains", "contains")):
        if a.get(key) is not None:
            tags.append(
                f'<span class="tag {"yes" if a[key] else "no"}">{name} {"✓" if a[key] else "✗"}</span>'
            )
    if a.get("rouge_l") is not None:
        tags.append(f'<span class="tag">ROUGE-L {a["rouge_l"]:.2f}</span>')
    reason = {"stop": "ended its turn", "length": "cut at the token limit", "error": "not answered"}
    tags.append(
        f'<span class="tag">{reason.get(a.get("finish_reason"), escape(str(a.get("finish_reason"))))}</span>'
    )
    return "".join(tags)  # fmt: skip


def _samples(report: dict) -> str:
    keys = [m["key"] for m in report["models"]]
    out = []
    for n, s in enumerate(report["samples"], start=1):
        rows = []
        for i, key in enumerate(keys):
            a = s["answers"].get(key)
            if a is None:
                continue
            body = diff_html(a["text"], s["reference"])
            if a.get("error"):
                body = f'<span class="muted">{escape(a["error"])}</span>'
            judge = a.get("judge")
            if judge:
                score = "–" if judge.get("score") is None else f"{judge['score']}/10"
                body += (f'<div class="judge small"><b>LLM judge: {score}</b> '
                         f'{escape(judge.get("reason") or "")}</div>')  # fmt: skip
            rows.append(
                f'<tr><td style="width:150px"><span class="swatch" style="background:{colour(i)}"></span>'
                f'{escape(key)}</td><td><div class="answer">{body}</div><div>{_tags(a)}</div></td></tr>'
            )  # fmt: skip
        ref = escape(s["reference"]) if s["reference"] else '<span class="muted">(none)</span>'
        out.append(
            f'<div class="sample"><div class="muted small">Prompt {n}</div>'
            f'<div class="prompt">{escape(s["prompt"])}</div>'
            f'<div class="ref"><span class="muted small">Reference:</span> {ref}</div>'
            f"<table>{''.join(rows)}</table></div>"
        )
    return "".join(out) or '<p class="muted">No prompt was answered (samples 0, or no row with a question and an answer).</p>'  # fmt: skip


def _judge(report: dict) -> str:
    j = report.get("judge") or {}
    if j.get("status") in (None, "off"):
        return ""
    head = f'<h2>LLM judge</h2><p class="note">{escape(j.get("note", ""))} Judge: {escape(j.get("model", ""))} at {escape(j.get("url", ""))}.</p>'  # fmt: skip
    if j.get("status") != "ok":
        return head + f'<p class="fail">{escape(j.get("message") or "The judge was not used.")}</p>'
    return head + '<p class="muted">Its mean score is in the table above; each score and its reason are under the answers.</p>'  # fmt: skip


def _lm_eval(report: dict) -> str:
    section = report.get("lm_eval") or {}
    if section.get("status") in (None, "off"):
        return ""
    head = f'<h2>lm-evaluation-harness</h2><p class="muted">Tasks: {escape(", ".join(section.get("tasks", [])))}</p>'  # fmt: skip
    if section.get("status") != "ok":
        return head + f'<p class="fail">{escape(section.get("message") or "Not run.")}</p>'
    rows = []
    for key, tasks in section.get("results", {}).items():
        for task, values in tasks.items():
            shown = ", ".join(f"{escape(k)} {v:.4f}" for k, v in values.items()
                              if isinstance(v, float) and "stderr" not in k)  # fmt: skip
            rows.append(f"<tr><td>{escape(key)}</td><td>{escape(task)}</td><td>{shown}</td></tr>")
    return (
        head + f"<table><tr><th>Model</th><th>Task</th><th>Metrics</th></tr>{''.join(rows)}</table>"
    )


def render_html(report: dict) -> str:
    data, gen = report.get("data", {}), report.get("generation", {})
    where = (
        "the validation split of the run"
        if data.get("source") == "validation"
        else "a held-out file"
    )
    facts = (
        f"Base model <b>{escape(str(report.get('base_model', '')))}</b> on {escape(str(report.get('device', '')))}. "
        f"Data: {where}, {escape(str(data.get('path', '')))} ({data.get('records', 0)} records; "
        f"{escape(str(data.get('summary', '')))}). "
        f"Answers: {'greedy' if gen.get('greedy') else 'sampled'}, at most {gen.get('max_new_tokens')} new tokens"
        f" (temperature {gen.get('temperature')}, top_p {gen.get('top_p')}, top_k {gen.get('top_k')}, "
        f"repetition penalty {gen.get('repetition_penalty')}, seed {gen.get('seed')})."
    )  # fmt: skip
    title = escape(str(report.get("name") or "Evaluation"))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>"
        f'<h1>{title}</h1><div class="muted small">{escape(str(report.get("created", "")))} · '
        f"{report.get('seconds', 0)} s</div><p>{facts}</p>"
        f"<h2>Metrics</h2>{_metrics_table(report)}"
        f'<p class="muted small">Loss and perplexity (exp of the loss) are over the answer tokens of '
        f"{data.get('examples', 0)} examples; exact match, contains and ROUGE-L compare each answer "
        f"with the reference after normalising (case, punctuation, articles). Best in bold.</p>"
        f"{plot_svg(report['models'])}"
        f"{_judge(report)}{_lm_eval(report)}"
        f"<h2>Answers</h2>"
        f'<p class="muted small"><span class="same">words also in the reference</span> · '
        f'<span class="extra">words not in it</span> · <ins class="miss">reference words missing</ins></p>'
        f"{_samples(report)}</body></html>"
    )  # fmt: skip
