"""`studio data generate MODE --input FILE --output FILE (--model M | --endpoint URL ...)`.

Modes: answer (prompts -> answers), paraphrase (N rewordings of each instruction), self-instruct
(new instructions from seed records), pairs (two answers per prompt, for preference data).
Rows are appended to the output as they are made; run the same command again after a stop
or a crash and it continues where it was (--overwrite starts afresh).
Exit codes: 0 done, 1 failed while generating, 2 bad input (one line, no traceback),
130 stopped (the rows written are kept). --events prints every event as one JSON line.
"""

from __future__ import annotations

import json
import signal
import sys


def add_parser(data_sub) -> None:
    from studio.core.data.generate.options import MODES, QUANTS

    g = data_sub.add_parser(
        "generate",
        help="make training data with a model: answers, paraphrases, self-instruct, pairs",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    g.add_argument("mode", choices=MODES, help="what to generate")
    g.add_argument("--input", required=True, help="prompts / instructions / seed records")
    g.add_argument("--output", required=True, help="the JSONL to write (continued if it exists)")
    g.add_argument("--model", default="", help="a local model folder or hub id")
    g.add_argument("--adapter", default="", help="a run or adapter folder on top of --model")
    g.add_argument("--quant", choices=QUANTS, default="none", help="load the model in 8/4 bits")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    g.add_argument("--endpoint", default="", help="an OpenAI-compatible URL instead of --model")
    g.add_argument("--endpoint-model", default="", help="the model name the endpoint serves")
    g.add_argument("--api-key", default="", help="the endpoint's key (never written anywhere)")
    g.add_argument("--n", type=int, default=2, help="paraphrase: rewordings per instruction")
    g.add_argument("--count", type=int, default=20, help="self-instruct: new instructions")
    g.add_argument(
        "--regenerate", action="store_true", help="paraphrase: answer each rewording anew"
    )
    g.add_argument("--judge-url", default="", help="pairs: an endpoint that picks the better one")
    g.add_argument("--judge-model", default="", help="pairs: the judge's model name")
    g.add_argument("--judge-key", default="", help="pairs: the judge's key")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--seed", type=int, default=0, help="the same seed writes the same rows")
    g.add_argument("--batch-size", type=int, default=8, help="prompts per batch (default 8)")
    g.add_argument("--overwrite", action="store_true", help="start the output afresh")
    g.add_argument("--trust-remote-code", action="store_true", help="run the model folder's code")
    g.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.add_argument(
        "--events",
        action="store_true",
        help="print every event as one JSON line on stdout (for the app and scripts)",
    )
    g.set_defaults(handler=run)


def build_options(args):
    from studio.core.data.generate import GenerateOptions

    names = (
        "mode input output model adapter quant device endpoint endpoint_model api_key n count "
        "regenerate judge_url judge_model judge_key temperature top_p top_k max_new_tokens seed "
        "batch_size overwrite trust_remote_code allow_pickle"
    ).split()
    return GenerateOptions(**{name: getattr(args, name) for name in names})


def run(args) -> int:
    from studio.commands.export import ExportProgress
    from studio.commands.train import quiet_library_noise
    from studio.core.data.generate import generate_events
    from studio.core.generation import CancelToken

    quiet_library_noise()
    opts = build_options(args)  # a bad setting: ConfigError, one line, exit 2
    cancel = CancelToken()

    def on_signal(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\nstopping (the rows written are kept)...", file=sys.stderr)
        cancel.cancel()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    show = ExportProgress(quiet=args.quiet or args.events)
    last = None
    for event in generate_events(opts, cancel):
        if event.type != "row":
            show(event)
        if args.events:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        last = event
    if last is None or last.type == "error":
        message = getattr(last, "message", "the generation produced no result")
        print(f"error: {message}", file=sys.stderr)
        return 2 if getattr(last, "kind", "") == "input" else 1
    if last.status == "stopped":
        return 130
    if not args.events and not args.quiet:
        print(f"{last.adapter}: {last.step} row(s)")
    return 0
