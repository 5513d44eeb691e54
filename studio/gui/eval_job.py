"""What the Evaluate page runs and shows, without widgets: the `studio eval` command line, the
child process that runs it (EvalJob), and a report as rich text for a QTextBrowser.

The evaluation runs as `python -m studio eval ... --events`, as exports do, so a crash or an
out-of-memory kill while the model is loaded can never take the window down. EvalJob is the
Export page's ExportJob (the same QProcess supervision, JSON lines read through the event loop)
with its own words for how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from PySide6.QtCore import QProcess

from studio.gui.export_job import ExportJob

STAGES = {
    "loading": "Loading the base model and the adapters",
    "loss": "Measuring the loss on the answers",
    "answers": "Answering the prompts",
    "judge": "Asking the judge",
    "lm-eval": "Running lm-evaluation-harness",
    "writing": "Writing the report",
}


@dataclass
class EvalChoice:
    runs: list[str]
    data: str = ""
    """Empty: the first run's validation split."""
    name: str = ""
    samples: int = 10
    max_new_tokens: int = 64
    base: bool = True
    judge_url: str = ""
    judge_model: str = ""
    judge_key: str = field(default="", repr=False)
    lm_eval_tasks: str = ""


def eval_args(c: EvalChoice) -> list[str]:
    """The arguments after `studio`: the same list is shown (key hidden) and run."""
    args = ["eval", "--runs", *c.runs]
    if c.data:
        args += ["--data", c.data]
    if c.name:
        args += ["--name", c.name]
    args += ["--samples", str(c.samples), "--max-new-tokens", str(c.max_new_tokens)]
    if not c.base:
        args.append("--no-base")
    if c.judge_url:
        args += ["--judge-url", c.judge_url, "--judge-model", c.judge_model]
        if c.judge_key:
            args += ["--judge-key", c.judge_key]
    if c.lm_eval_tasks:
        args += ["--lm-eval-tasks", c.lm_eval_tasks]
    return args


def shown_command(args: list[str]) -> str:
    import shlex

    shown = list(args)
    if "--judge-key" in shown:  # a secret is never shown on screen
        shown[shown.index("--judge-key") + 1] = "KEY"
    return "studio " + shlex.join(shown)


class EvalJob(ExportJob):
    """One `studio eval --events` child; `ended(status, report folder, message)` comes once."""

    def _finished(self, code: int, exit_status) -> None:
        self.kill_timer.stop()
        self._read_events()
        self._read_log()
        last = self.last or {}
        if last.get("type") == "done" and last.get("status") == "completed":
            self._end("completed", str(last.get("adapter") or ""), "")
        elif last.get("type") == "done" or (self.cancelled and not last):
            self._end("stopped", "", "Evaluation cancelled; no report was written.")
        elif last.get("type") == "error":
            self._end("failed", "", str(last.get("message") or "The evaluation failed."))
        else:
            self._end("failed", "", self._crash_message(code, exit_status))

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end("failed", "", f"The evaluation could not start: {self.process.errorString()}")

    def _crash_message(self, code: int, exit_status) -> str:
        how = self._ended_how(code, exit_status, STAGES)
        return f"The evaluation process {how}; no report was written. The log says more."


# --- a report as rich text ------------------------------------------------------------------


def _num(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def metrics_html(report: dict, muted: str) -> str:
    """Base vs runs: one row a model, best of each column in bold (Qt's rich-text subset)."""
    from studio.core.evaluate.report import best

    models = report.get("models", [])
    cols = [("loss", "Loss", True, ".3f"), ("perplexity", "Perplexity", True, ".2f"),
            ("exact_match", "Exact match", False, ".0%"), ("contains", "Contains", False, ".0%"),
            ("rouge_l", "ROUGE-L", False, ".3f")]  # fmt: skip
    if any(m.get("judge") is not None for m in models):
        cols.append(("judge", "LLM judge", False, ".1f"))
    win = {k: best(models, k, low) for k, _, low, _ in cols}
    head = "".join(f'<th align="right" style="color:{muted}">{t}</th>' for _, t, _, _ in cols)
    rows = []
    for m in models:
        cells = "".join(
            f'<td align="right">{"<b>" if win[k] == m["key"] and len(models) > 1 else ""}'
            f"{_num(m.get(k), spec)}</td>"
            for k, _, _, spec in cols
        )
        rows.append(f"<tr><td>{escape(m['key'])}</td>{cells}</tr>")
    return (
        f'<table width="100%" cellspacing="0" cellpadding="4"><tr><th align="left" '
        f'style="color:{muted}">Model</th>{head}</tr>{"".join(rows)}</table>'
    )


def answers_html(report: dict, muted: str, shown_chars: int = 240) -> str:
    """Each prompt with the reference and every model's answer side by side."""
    keys = [m["key"] for m in report.get("models", [])]
    width = max(10, 70 // max(1, len(keys)))
    head = f'<th align="left" width="30%" style="color:{muted}">Prompt</th>' + "".join(
        f'<th align="left" width="{width}%" style="color:{muted}">{escape(k)}</th>' for k in keys
    )
    rows = []
    for s in report.get("samples", []):
        cells = []
        for k in keys:
            a = s.get("answers", {}).get(k) or {}
            text = a.get("text", "")
            if len(text) > shown_chars:
                text = text[: shown_chars - 2] + " …"
            marks = (
                "✓ exact" if a.get("exact_match") else ("✓ contains" if a.get("contains") else "")
            )
            judge = (a.get("judge") or {}).get("score")
            if judge is not None:
                marks += f" · judge {judge}/10"
            cells.append(
                f"<td>{escape(text) or '(nothing)'}"
                f'<br><small style="color:{muted}">{marks}</small></td>'
            )
        rows.append(
            f"<tr><td><b>{escape(s.get('prompt', ''))}</b><br>"
            f'<span style="color:{muted}">Reference: {escape(s.get("reference", ""))}</span></td>'
            f"{''.join(cells)}</tr>"
        )
    return f'<table width="100%" cellspacing="0" cellpadding="5"><tr>{head}</tr>{"".join(rows)}</table>'


def report_html(report: dict, muted: str) -> str:
    if not report:
        return ""
    parts = [metrics_html(report, muted)]
    judge = report.get("judge") or {}
    if judge.get("status") == "ok":
        parts.append(f'<p style="color:{muted}">LLM judge ({escape(judge.get("model", ""))}): '
                     f"{escape(judge.get('note', ''))}</p>")  # fmt: skip
    elif judge.get("status") not in (None, "off"):
        parts.append(f"<p>{escape(judge.get('message', ''))}</p>")
    lm = report.get("lm_eval") or {}
    if lm.get("status") not in (None, "off", "ok"):
        parts.append(f"<p>{escape(lm.get('message', ''))}</p>")
    if report.get("samples"):
        parts.append(answers_html(report, muted))
    return "".join(parts)
