"""`evaluate_events(opts)`: the base and one or more runs measured in one pass, as events.

Stages (each a Progress `stage`): loading, loss, answers, judge, lm-eval, writing. Bad input
is found before the weights load and ends the stream with Failed(kind="input"); a cancel ends
it with Done(status="stopped") and leaves nothing behind; otherwise Done's `adapter` field is
the report's folder (as `studio export` gives its output there), holding report.json and
report.html. The judge and lm-eval are optional: when they cannot run, their section of the
report says why and the rest is still measured.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from studio.core.after_run import pick_prompts
from studio.core.errors import DataError, StudioError
from studio.core.evaluate import harness, metrics
from studio.core.evaluate.inputs import load_eval_data, output_folder, resolve_runs
from studio.core.evaluate.judge import Judge, JudgeUnreachable
from studio.core.evaluate.options import EvalOptions
from studio.core.events import Done, Event, Failed, Log, Progress
from studio.core.generation import CancelToken

DEFAULT_SEQ_LEN = 2048
LOSS_STEP = 8
"""Batches between progress events (and cancel checks) while measuring the loss."""


class Cancelled(Exception):
    pass


class Clock:
    """Progress with an ETA from the average time per item so far in the stage."""

    def __init__(self, stage: str, total: int):
        self.stage, self.total, self.start, self.done = stage, max(1, total), time.monotonic(), 0

    def tick(self, n: int = 1) -> Progress:
        self.done += n
        per = (time.monotonic() - self.start) / max(1, self.done)
        return Progress(self.done, self.total, self.stage, eta_s=per * (self.total - self.done))


def _check(cancel: CancelToken) -> None:
    if cancel.cancelled:
        raise Cancelled()


def evaluate_events(opts: EvalOptions, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Evaluate as asked; yields Log/Progress events and ends with Done or Failed."""
    from studio.core.checkpoint import commit_tmp, prepare_tmp
    from studio.core.evaluate.report import write_report

    cancel = cancel or CancelToken()
    tmp: Path | None = None
    try:
        started = time.monotonic()
        final, report = yield from _evaluate(opts, cancel)
        yield Progress(0, 1, "writing")
        report["seconds"] = round(time.monotonic() - started, 2)
        tmp = prepare_tmp(final)
        write_report(tmp, report)
        commit_tmp(tmp, final)
        tmp = None
        yield Progress(1, 1, "writing")
        yield Log(f"wrote {final / 'report.html'}")
        yield Done(step=0, adapter=str(final), status="completed")
    except Cancelled:
        yield Log("evaluation cancelled; no report was written", level="warning")
        yield Done(step=0, adapter="", status="stopped")
    except StudioError as e:
        yield Failed(e.message, kind="input")
    except MemoryError:
        yield Failed("out of memory while evaluating: use a smaller --batch-size", kind="oom")
    except Exception as e:  # a bug or a library failure: one line, nothing half-written
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "out of memory" in text.lower():
            yield Failed(f"out of memory while evaluating ({text})", kind="oom")
        else:
            yield Failed(f"the evaluation failed: {type(e).__name__}: {text}", kind="error")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _download_base(runs, device: str, cancel: CancelToken) -> Iterator[Event]:
    """A base model on the hub not whole in the cache: downloaded first, its bytes as
    Progress events (stage "download ..."); a cancel meanwhile stops it like any stage."""
    from studio.core.evaluate.session import model_config
    from studio.core.hub import DownloadCancelled, download_events

    cfg = model_config(runs, device)
    try:
        yield from download_events(
            cfg.path,
            allow_pickle=cfg.allow_pickle,
            trust_remote_code=cfg.trust_remote_code,
            cancel=cancel,
        )
    except DownloadCancelled:
        raise Cancelled() from None


def _evaluate(opts: EvalOptions, cancel: CancelToken):
    from studio.core.evaluate import measure
    from studio.core.evaluate.report import build_report
    from studio.core.evaluate.session import load_base_tokenizer, load_session

    runs = resolve_runs(opts.runs)
    data = load_eval_data(opts, runs[0])
    final = output_folder(opts, runs[0])
    tasks = harness.find_tasks(opts.lm_eval_tasks) if opts.lm_eval_tasks else None
    yield from _download_base(runs, opts.device, cancel)
    tokenizer = load_base_tokenizer(runs, opts.device)
    seq_len = runs[0].cfg.train.seq_len if runs[0].cfg is not None else DEFAULT_SEQ_LEN
    prompts = pick_prompts(data.records, opts.samples) if opts.samples else []
    first_examples = _examples(data, tokenizer, runs[0].template, seq_len, prompts)
    models = ("the base model and " if opts.base else "") + ", ".join(r.key for r in runs)
    yield Log(
        f"evaluating {models} on {len(data.records)} records of {data.path} "
        f"({'validation split' if data.source == 'validation' else 'given file'})"
    )
    yield Progress(0, 1, "loading")
    session = load_session(runs, tokenizer, opts.device, opts.base)
    yield Progress(1, 1, "loading")
    _check(cancel)
    examples = {runs[0].template: first_examples}
    for entry in session.entries:
        if entry.template not in examples:
            examples[entry.template] = _examples(data, tokenizer, entry.template, seq_len, [])
    losses = yield from _losses(session, examples, opts.batch_size, cancel)
    settings = measure.greedy_settings(opts.max_new_tokens)
    answers = yield from _answers(session, prompts, settings, cancel)
    judge = yield from _judge(opts, session, prompts, answers, cancel)
    lm_eval = yield from _lm_eval(opts, session, tasks, cancel)
    report = build_report(
        opts, runs, session, data, first_examples[1], seq_len, prompts, settings,
        losses, answers, judge, lm_eval,
    )  # fmt: skip
    return final, report


def _examples(data, tokenizer, template_name: str, seq_len: int, prompts):
    """(examples, stats) for the loss; refuses a file with nothing to measure."""
    from studio.core.evaluate import measure
    from studio.core.infer import chat_template

    examples, stats = measure.build(data.records, tokenizer, chat_template(tokenizer, template_name), seq_len)  # fmt: skip
    if not examples and not prompts:
        where = "the data file" if data.source == "file" else "the validation split"
        raise DataError(
            f"data: no usable row in {where} {data.path}: {stats.summary(seq_len)}; "
            "each row needs an answer (an assistant turn) to measure",
            field="data",
        )
    return examples, stats


def _losses(session, examples: dict, batch_size: int, cancel):
    """{model key: (sum of answer-token losses, tokens, examples)}."""
    from studio.core.evaluate.measure import loss_rows, loss_sums
    from studio.core.objective import LossFn

    loss_fn = LossFn(session.model)
    pad_id = session.tokenizer.pad_token_id
    jobs = [(e, *examples[e.template]) for e in session.entries]
    total = sum(len(ex) for _, ex, _ in jobs)
    clock = Clock("loss", total)
    out = {}
    for entry, exs, _stats in jobs:
        rows = loss_rows(exs)
        loss, count = 0.0, 0
        with session.using(entry):
            for i in range(0, len(rows), batch_size * LOSS_STEP):
                _check(cancel)
                chunk = rows[i : i + batch_size * LOSS_STEP]
                s, n = loss_sums(loss_fn, exs, chunk, batch_size, pad_id, session.device)
                loss, count = loss + s, count + n
                yield clock.tick(len(chunk))
        out[entry.key] = (loss, count, len(exs))
    return out


def _answers(session, prompts, settings, cancel):
    """{model key: [answer dict per prompt]} (greedy answers, scored against the reference)."""
    from studio.core.evaluate.measure import answer

    clock = Clock("answers", len(session.entries) * len(prompts))
    out = {}
    for entry in session.entries:
        template = session.template(entry.template)
        got = []
        with session.using(entry) as model:
            for sample in prompts:
                _check(cancel)
                a = answer(session, model, template, sample.messages, settings, cancel)
                _check(cancel)  # a cancel mid-answer leaves it cut short: not a result
                a.update(metrics.score_answer(a["text"], sample.reference))
                got.append(a)
                yield clock.tick()
        out[entry.key] = got
    return out


def _judge(opts: EvalOptions, session, prompts, answers: dict, cancel):
    """The judge's section: {status, url, model, message}; verdicts go into the answers."""
    section = {"status": "off", "url": opts.judge_url, "model": opts.judge_model, "message": ""}
    if not opts.judge_url:
        return section
    if not prompts:
        section.update(status="skipped", message="no prompt was answered, so nothing to judge")
        return section
    judge = Judge(opts.judge_url, opts.judge_model, opts.judge_key)
    clock = Clock("judge", len(answers) * len(prompts))
    try:
        for got in answers.values():
            for sample, a in zip(prompts, got, strict=True):
                _check(cancel)
                v = judge.score(sample.prompt, sample.reference, a["text"])
                a["judge"] = {"score": v.score, "reason": v.reason}
                yield clock.tick()
    except JudgeUnreachable as e:
        for got in answers.values():
            for a in got:
                a.pop("judge", None)  # half a judged set would compare unequal models
        section.update(status="failed", message=f"the judge was not used: {e}")
        yield Log(section["message"], level="warning")
        return section
    section["status"] = "ok"
    return section


def _lm_eval(opts: EvalOptions, session, tasks, cancel):
    """The lm-eval section: {status, tasks, message, results: {model key: {task: metrics}}}."""
    section = {"status": "off", "tasks": [], "message": "", "results": {}}
    if tasks is None:
        return section
    include, names = tasks
    section["tasks"] = names
    if not harness.installed():
        section.update(status="skipped", message=harness.MISSING)
        yield Log(harness.MISSING, level="warning")
        return section
    clock = Clock("lm-eval", len(session.entries))
    try:
        for entry in session.entries:
            _check(cancel)
            with session.using(entry) as model:
                section["results"][entry.key] = harness.run_tasks(
                    model, session.tokenizer, include, names,
                    limit=opts.lm_eval_limit, batch_size=opts.batch_size,
                )  # fmt: skip
            yield clock.tick()
    except Cancelled:
        raise
    except Exception as e:  # a task the harness cannot run: the rest of the report stands
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        section.update(status="failed", message=f"lm-evaluation-harness failed: {first}")
        yield Log(section["message"], level="warning")
        return section
    section["status"] = "ok"
    return section


def run_evaluation(opts: EvalOptions, on_event=None, cancel: CancelToken | None = None):
    """Run an evaluation to its end; returns the last event (Done or Failed)."""
    last = None
    for event in evaluate_events(opts, cancel):
        if on_event is not None:
            on_event(event)
        last = event
    return last
