"""`studio data inspect FILE`: what Studio makes of a data file, before any training.

Prints the format, how many records were kept and skipped, and every problem with its line.
With `--model`, also token-length statistics and the first example as the model will see
it, with the part that carries loss marked ([[like this]], or green on a terminal).
Exit 0 when at least one record is usable; 2 (with one sentence on stderr) otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from studio.core.config import FORMATS, TEMPLATES
from studio.core.errors import DataError

GREEN = "\033[32m"
DIM = "\033[2m"
RESET = "\033[0m"


def add_parser(sub):
    p = sub.add_parser("data", help="inspect a data file: format, records, errors, token lengths")
    p.set_defaults(handler=lambda args: _usage(p))
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    i = data_sub.add_parser(
        "inspect",
        help="show the format, record counts and every problem (with --model: token statistics)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    i.add_argument("file", metavar="FILE", help="JSON, JSONL, CSV/TSV, Parquet or TXT file")
    i.add_argument(
        "--format", default="auto", choices=FORMATS, help="data format (default: detect)"
    )
    i.add_argument(
        "--columns",
        default=None,
        metavar="ROLE=COLUMN,...",
        help="CSV/Parquet column mapping, e.g. instruction=question,output=answer",
    )
    i.add_argument(
        "--model", default=None, metavar="M", help="model folder or hub id for token statistics"
    )
    i.add_argument(
        "--seq-len", type=int, default=512, help="sequence length to compare against (default 512)"
    )
    i.add_argument(
        "--template",
        default="auto",
        choices=TEMPLATES,
        help="chat template (default: the model's own)",
    )
    i.add_argument(
        "--train-on",
        default="assistant",
        choices=("assistant", "all"),
        help="which tokens carry loss",
    )
    i.add_argument(
        "--trust-remote-code", action="store_true", help="run code shipped with the model"
    )
    i.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    i.set_defaults(handler=run)
    __import__("studio.commands.data_dedupe").commands.data_dedupe.add_parser(data_sub)
    __import__("studio.commands.data_generate").commands.data_generate.add_parser(data_sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def parse_columns(text: str | None) -> dict[str, str] | None:
    """`instruction=question,output=answer` -> {"instruction": "question", "output": "answer"}."""
    if not text:
        return None
    mapping = {}
    for part in text.split(","):
        role, eq, column = part.partition("=")
        if not eq or not role.strip():
            raise DataError(
                f"--columns: expected ROLE=COLUMN pairs separated by commas; got {part!r}."
            )
        mapping[role.strip()] = column.strip()
    return mapping


def run(args) -> int:
    from studio.core.data.inspect import inspect_file

    # Chinese text and emoji must not crash a terminal that cannot show them.
    if hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="replace")
        except (ValueError, OSError):
            pass
    if args.seq_len < 1:
        raise DataError(f"--seq-len must be at least 1; got {args.seq_len}.")
    report = inspect_file(
        args.file,
        format=args.format,
        columns=parse_columns(args.columns),
        model=args.model,
        seq_len=args.seq_len,
        template=args.template,
        train_on=args.train_on,
        trust_remote_code=args.trust_remote_code,
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_report(report, colour=sys.stdout.isatty()))
    return 0


def format_report(report: dict, colour: bool = False) -> str:
    lines = [
        f"file:    {report['path']}",
        f"format:  {report['format']}",
        f"records: {report['records']} kept, {report['skipped']} skipped",
    ]
    if report.get("columns"):
        lines.append(
            "columns: " + ", ".join(f"{role}={col}" for role, col in report["columns"].items())
        )
    if report["errors"]:
        lines.append(f"errors ({len(report['errors'])}):")
        lines += [f"  line {e['line']}: {e['message']}" for e in report["errors"]]
    tokens = report.get("tokens")
    if tokens:
        lines.append(
            f"tokens:  min {tokens['min']}, mean {tokens['mean']}, p50 {tokens['p50']}, "
            f"p95 {tokens['p95']}, max {tokens['max']} over {tokens['count']} "
            f"{'sequences (two a pair)' if report['format'] == 'pairs' else 'records'}"
        )
        lines.append(
            f"         {tokens['over_seq_len']} longer than --seq-len {tokens['seq_len']} "
            f"(would be truncated)"
        )
        if report.get("no_trainable_tokens"):
            lines.append(
                f"         {report['no_trainable_tokens']} with nothing to train on after truncation"
            )
    example = report.get("example")
    if example:
        legend = "trained part in green" if colour else "trained part in [[ ]]"
        lines.append(
            f"first example (line {example['line']}, {example['tokens']} tokens, {legend}):"
        )
        if example.get("rejected_segments"):  # a preference pair: both sides
            lines.append("chosen:")
            lines.append(mark(example["segments"], colour))
            lines.append("rejected:")
            lines.append(mark(example["rejected_segments"], colour))
        else:
            lines.append(mark(example["segments"], colour))
    return "\n".join(lines)


def mark(segments: list[dict], colour: bool) -> str:
    out = []
    for seg in segments:
        text, trained = seg["text"], seg["trained"]
        if colour:
            out.append(f"{GREEN if trained else DIM}{text}{RESET}")
        else:
            out.append(f"[[{text}]]" if trained else text)
    return "".join(out)
