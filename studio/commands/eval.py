"""`studio eval`: the base model and one or more runs on held-out data, in one pass.

Writes RUN/eval/<name>/report.json and report.html (RUN: the first run). Exit codes as
`studio train`: 0 done, 1 failed while evaluating, 2 bad input (one line, no traceback), 130
stopped (no report is left half-written).
"""

from __future__ import annotations

import json
import signal
import sys


def add_parser(sub) -> None:
    from studio.core.evaluate.options import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLES

    p = sub.add_parser(
        "eval",
        help="evaluate runs against their base model: loss, answers, optional judge and lm-eval",
        description=(
            "Measure the base model and one or more runs trained on it, in one pass (one copy "
            "of the weights; the base answers with the adapters switched off): loss and "
            "perplexity on the answer tokens, greedy answers to N prompts scored against the "
            "reference (exact match, contains, ROUGE-L), optionally an LLM judge through an "
            "OpenAI-compatible endpoint and lm-evaluation-harness tasks from local files. "
            "Writes RUN/eval/NAME/report.json and report.html."
        ),
    )
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders (or adapter/checkpoint folders) on one base model")  # fmt: skip
    p.add_argument("--data", default="", metavar="FILE", help="held-out data (default: the first run's validation split)")  # fmt: skip
    p.add_argument("--name", default="", help="the report's folder under RUN/eval/ (default: eval-DATE-TIME)")  # fmt: skip
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N", help=f"prompts answered by every model (default {DEFAULT_SAMPLES}; 0: loss only)")  # fmt: skip
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N", help=f"longest answer in tokens (default {DEFAULT_MAX_NEW_TOKENS}; answers are greedy)")  # fmt: skip
    p.add_argument("--no-base", dest="base", action="store_false", help="leave the base model out")
    p.add_argument("--judge-url", default="", metavar="URL", help="an OpenAI-compatible endpoint scoring answers 1-10 (e.g. http://127.0.0.1:8000/v1 from `studio serve`)")  # fmt: skip
    p.add_argument("--judge-model", default="", metavar="M", help="the judge's model name")
    p.add_argument("--judge-key", default="", metavar="K", help="the judge's API key (never written to the report)")  # fmt: skip
    p.add_argument("--lm-eval-tasks", default="", metavar="DIR_OR_YAML", help='lm-evaluation-harness task YAML (or a folder of them), offline; needs pip install "studio[eval]"')  # fmt: skip
    p.add_argument("--lm-eval-limit", type=int, default=None, metavar="N", help="at most N documents per lm-eval task")  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--batch-size", type=int, default=4, help="examples per forward pass for the loss")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a report of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--events", action="store_true", help="print every event as one JSON line on stdout (for the app and scripts)")  # fmt: skip
    p.set_defaults(handler=run)


def options(args):
    from studio.core.evaluate import EvalOptions

    return EvalOptions(
        runs=args.runs,
        data=args.data,
        name=args.name,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        base=args.base,
        judge_url=args.judge_url,
        judge_model=args.judge_model,
        judge_key=args.judge_key,
        lm_eval_tasks=args.lm_eval_tasks,
        lm_eval_limit=args.lm_eval_limit,
        device=args.device,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )


def run(args) -> int:
    from studio.commands.export import ExportProgress
    from studio.commands.train import quiet_library_noise
    from studio.core.evaluate import evaluate_events
    from studio.core.generation import CancelToken

    quiet_library_noise()
    opts = options(args)  # a bad value is a StudioError: one line, exit 2
    cancel = CancelToken()

    def on_signal(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\nstopping the evaluation (no report will be written)...", file=sys.stderr)
        cancel.cancel()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    show = ExportProgress(quiet=args.quiet or args.events)  # the same stage/bar printer
    last = None
    for event in evaluate_events(opts, cancel):
        show(event)
        if args.events:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        last = event
    if last is None or last.type == "error":
        message = getattr(last, "message", "the evaluation produced no result")
        print(f"error: {message}", file=sys.stderr)
        return 2 if getattr(last, "kind", "") == "input" else 1
    if last.status == "stopped":
        return 130
    if not args.events:
        _print_summary(last.adapter)
    return 0


def _print_summary(folder: str) -> None:
    """The metrics table on stdout, then where the report is."""
    from pathlib import Path

    from studio.core.evaluate.report import read_report

    report = read_report(folder)

    def num(x, spec):
        return "-" if x is None else format(x, spec)

    print(f"{'model':<24} {'loss':>8} {'ppl':>10} {'exact':>6} {'contains':>8} {'rougeL':>7}")
    for m in report.get("models", []):
        print(
            f"{m['key'][:24]:<24} {num(m['loss'], '8.4f')} {num(m['perplexity'], '10.2f')} "
            f"{num(m['exact_match'], '6.0%')} {num(m['contains'], '8.0%')} "
            f"{num(m['rouge_l'], '7.3f')}"
        )
    print(Path(folder) / "report.html")
