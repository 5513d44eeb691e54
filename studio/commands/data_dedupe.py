"""`studio data dedupe FILE`: drop exact and near copies (and, if asked, records by length or
language), writing the rest to a NEW file; the original is never changed.

Prints the clusters of copies (the first few with their lines and a snippet), the counts, and
where the new file is. Exit 0 when done, 2 (one sentence on stderr) for bad input, 130 when
interrupted (nothing is written).
"""

from __future__ import annotations

import json
import signal
import sys
import threading

SHOWN = 5
"""Clusters printed in full (all are in --report and --json)."""


def add_parser(data_sub) -> None:
    from studio.core.config import FORMATS
    from studio.core.data.filters import LANGUAGES

    d = data_sub.add_parser(
        "dedupe",
        help="find exact and near duplicates (and filter by length or language) into a new file",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1].replace("\n", " "),
    )
    d.add_argument("file", metavar="FILE", help="JSON, JSONL, CSV/TSV, Parquet or TXT file")
    d.add_argument("--output", default="", help="the new file (default FILE.clean.jsonl)")
    d.add_argument(
        "--format", default="auto", choices=FORMATS, help="data format (default: detect)"
    )
    d.add_argument("--columns", default=None, metavar="ROLE=COLUMN,...", help="CSV/Parquet mapping")
    d.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="similarity (Jaccard of word 2-grams) from which records are near copies (0.8)",
    )
    d.add_argument("--ngram", type=int, default=2, help="words per shingle (default 2)")
    d.add_argument(
        "--exact-only", action="store_true", help="only exact copies (after normalising)"
    )
    d.add_argument("--min-chars", type=int, default=0, help="drop records whose answer is shorter")
    d.add_argument("--max-chars", type=int, default=0, help="drop records whose answer is longer")
    d.add_argument(
        "--lang",
        default="",
        metavar="CODES",
        help=f"keep only these languages, e.g. en,fr (detected by script and common words; "
        f"codes: {', '.join(LANGUAGES)})",
    )
    d.add_argument("--report", default="", metavar="FILE.json", help="write the full report here")
    d.add_argument("--dry-run", action="store_true", help="report only; write no data file")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    d.add_argument("--json", action="store_true", help="print the report as one JSON object")
    d.add_argument(
        "--events", action="store_true", help="print every event as one JSON line on stdout"
    )
    d.set_defaults(handler=run)


def options(args):
    from studio.commands.data import parse_columns
    from studio.core.data.clean import CleanOptions
    from studio.core.data.dedupe import DedupeOptions
    from studio.core.data.filters import FilterOptions
    from studio.core.errors import DataError

    try:
        langs = tuple(x.strip() for x in args.lang.split(",") if x.strip())
        return CleanOptions(
            input=args.file,
            output=args.output,
            format=args.format,
            columns=parse_columns(args.columns),
            dedupe=DedupeOptions(args.threshold, ngram=args.ngram, exact_only=args.exact_only),
            filters=FilterOptions(args.min_chars, args.max_chars, langs),
            dry_run=args.dry_run,
            overwrite=args.overwrite,
        )
    except ValueError as e:
        raise DataError(str(e)) from None


def run(args) -> int:
    from studio.core.data.clean import clean_events

    if hasattr(sys.stdout, "reconfigure"):  # snippets of any language on any terminal
        try:
            sys.stdout.reconfigure(errors="replace")
        except (ValueError, OSError):
            pass
    opts = options(args)
    cancel = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    gen = clean_events(opts, cancel)
    last, report = None, None
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            report = stop.value
            break
        if args.events:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        elif event.type == "progress" and sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K{event.stage}: {event.done}/{event.total}")
            sys.stderr.flush()
        last = event
    if sys.stderr.isatty() and not args.events:
        sys.stderr.write("\r\033[K")
    if last is None or last.type == "error":
        print(f"error: {getattr(last, 'message', 'nothing was done')}", file=sys.stderr)
        return 2 if getattr(last, "kind", "") == "input" else 1
    if report is None:  # stopped
        return 130
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, ensure_ascii=False, indent=1)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    elif not args.events:
        print(format_report(report, _snippets(report)))
    return 0


def _snippets(report) -> dict[int, str]:
    """The kept record's text for the first clusters shown (read again: cheap, only a few)."""
    from studio.core.data.dedupe import record_text
    from studio.core.data.formats import load_dataset

    wanted = {c.keep for c in report.clusters[:SHOWN]}
    if not wanted:
        return {}
    ds = load_dataset(report.path, report.format)
    return {r.line: " ".join(record_text(r).split()) for r in ds.records if r.line in wanted}


def format_report(report, snippets: dict[int, str]) -> str:
    exact = sum(c.kind == "exact" for c in report.clusters)
    lines = [
        f"file:       {report.path} ({report.format}, {report.records} records, "
        f"{report.skipped} rows skipped)",
        f"duplicates: {len(report.clusters)} clusters ({exact} exact, "
        f"{len(report.clusters) - exact} near); {report.duplicates} records to drop, "
        "the first of each cluster is kept",
    ]
    for c in report.clusters[:SHOWN]:
        text = snippets.get(c.keep, "")
        text = text if len(text) <= 70 else text[:69] + "…"
        sim = "" if c.kind == "exact" else f", similarity >= {c.similarity:.2f}"
        lines.append(f"  lines {_lines(c.lines)} ({c.kind}{sim}): {text}")
    if len(report.clusters) > SHOWN:
        lines.append(f"  ... and {len(report.clusters) - SHOWN} more (see --report)")
    if report.filtered:
        lines.append(f"filtered:   {len(report.filtered)} records")
        for line, why in report.filtered[:SHOWN]:
            lines.append(f"  line {line}: {why}")
    lines.append(f"kept:       {report.kept} records")
    lines.append(
        f"written:    {report.output}" if report.output else "written:    nothing (dry run)"
    )
    return "\n".join(lines)


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:6]))
    return shown + (f" (+{len(lines) - 6})" if len(lines) > 6 else "")
