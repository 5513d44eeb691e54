"""`clean_events(opts, cancel)`: a data file's clean-up (filters, then duplicates) as events.

Stages (each a Progress `stage`): loading, filtering, normalising, hashing, comparing,
writing. The result goes to a NEW file (default FILE's name + ".clean.jsonl" beside it);
the original is never written to. Log lines say what was found; the stream ends with
Done (step: records kept, adapter: the new file, "" for a dry run; status completed or
stopped) or Failed (kind "input": a file that cannot be read, an output that exists...).
The generator's return value (`report = yield from clean_events(...)`) is the CleanReport,
None when it did not complete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.data import dedupe, filters
from studio.core.data.dedupe import Cancelled, Cluster, DedupeOptions, is_cancelled
from studio.core.data.readers import JSONL_EXTS
from studio.core.data.records import Dataset, Record
from studio.core.errors import DataError, StudioError
from studio.core.events import Done, Event, Failed, Log, Progress


@dataclass
class CleanOptions:
    input: str
    output: str = ""
    """The new file (default: next to the input, named FILE.clean.jsonl)."""
    format: str = "auto"
    columns: dict[str, str] | None = None
    dedupe: DedupeOptions = field(default_factory=DedupeOptions)
    filters: filters.FilterOptions = field(default_factory=filters.FilterOptions)
    dry_run: bool = False
    """Find and report, write nothing."""
    overwrite: bool = False
    """Replace an existing output file (never the input)."""


@dataclass
class CleanReport:
    path: str
    format: str
    records: int
    skipped: int
    """Rows of the source that were not records (import problems): not written either."""
    clusters: list[Cluster]
    filtered: list[tuple[int, str]]
    """(line, why) for each record a filter dropped."""
    kept: int
    output: str = ""
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return sum(len(c.drop) for c in self.clusters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "records": self.records,
            "skipped": self.skipped,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "exact_clusters": sum(c.kind == "exact" for c in self.clusters),
            "near_clusters": sum(c.kind == "near" for c in self.clusters),
            "clusters": [c.to_dict() for c in self.clusters],
            "filtered": [{"line": k, "reason": v} for k, v in self.filtered],
            "output": self.output,
            "seconds": self.seconds,
        }


def default_output(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".clean.jsonl")


def clean_events(
    opts: CleanOptions,
    cancel: Any = None,
    count: Callable[[str], int] = len,
) -> Iterator[Event]:
    """Clean `opts.input` as asked; `count` measures an answer's length (default characters)."""
    try:
        started = time.monotonic()
        report = yield from _clean(opts, cancel, count)
        report.seconds = round(time.monotonic() - started, 2)
        yield Done(step=report.kept, adapter=report.output, status="completed")
        return report
    except Cancelled:
        yield Log("clean-up cancelled; nothing was written", level="warning")
        yield Done(step=0, adapter="", status="stopped")
    except (StudioError, ValueError) as e:
        yield Failed(getattr(e, "message", None) or str(e), kind="input")
    except MemoryError:
        yield Failed("out of memory while looking for duplicates", kind="oom")
    return None


def _clean(opts: CleanOptions, cancel: Any, count: Callable[[str], int]) -> Iterator[Event]:
    from studio.core.data.formats import load_dataset

    out = Path(opts.output) if opts.output else default_output(opts.input)
    if not opts.dry_run:
        check_output(opts.input, out, opts.overwrite)
    yield Progress(0, 1, "loading")
    ds = load_dataset(opts.input, opts.format, opts.columns)
    yield Log(f"{ds.kept} records ({ds.format}) in {opts.input}; {ds.skipped} rows skipped")
    records, filtered = yield from _filter(ds.records, opts.filters, cancel, count)
    clusters = yield from dedupe.duplicate_events(records, opts.dedupe, cancel)
    # By identity, not line: all the records of a one-line JSON array start on line 1.
    dropped = {id(records[i]) for c in clusters for i in c.index[1:]}
    keep = [r for r in records if id(r) not in dropped]
    report = CleanReport(opts.input, ds.format, ds.kept, ds.skipped, clusters, filtered, len(keep))
    yield Log(
        f"{len(clusters)} clusters of copies ({report.duplicates} records to drop), "
        f"{len(filtered)} records filtered out, {len(keep)} kept"
    )
    if not opts.dry_run:
        if is_cancelled(cancel):
            raise Cancelled()
        yield Progress(0, 1, "writing")
        report.output = str(write_clean(ds, keep, out, opts.overwrite))
        yield Progress(1, 1, "writing")
        yield Log(f"wrote {report.output}")
    return report


def _filter(
    records: list[Record], opts: filters.FilterOptions, cancel: Any, count: Callable[[str], int]
) -> Iterator[Event]:
    if not opts.active:
        return records, []
    kept, dropped = [], []
    for i, record in enumerate(records):
        if not i % 10_000:
            if is_cancelled(cancel):
                raise Cancelled()
            yield Progress(i, len(records), "filtering")
        reason = filters.why_dropped(record, opts, count)
        if reason is None:
            kept.append(record)
        else:
            dropped.append((record.line, reason))
    yield Progress(len(records), len(records), "filtering")
    return kept, dropped


def check_output(source: str | os.PathLike, out: Path, overwrite: bool) -> None:
    """Refuse to write over the source (ever) or over an existing file (unless asked)."""
    if out.exists() and out.resolve() == Path(source).resolve():
        raise DataError(f"{out} is the input file; the clean-up writes a new file beside it.")
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; choose another output or pass --overwrite.")
    if out.is_dir():
        raise DataError(f"{out} is a folder; expected a file name for the cleaned data.")


def write_clean(
    dataset: Dataset,
    keep_lines: Iterable[int | Record],
    out_path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Write the records starting on `keep_lines` to a new JSONL file; returns its path.

    `keep_lines` may hold the kept Records themselves instead: a JSON array on one line has
    all its records on line 1, so only the records say which of them to keep.

    From a JSONL source each kept line is copied byte for byte (the fields Studio does not
    read stay too); other sources are written in Studio's normal form (messages, text, or
    prompt/chosen/rejected), which `load_dataset` reads back as the same records.
    """
    out = Path(out_path)
    check_output(dataset.path, out, overwrite)
    keep_lines = list(keep_lines)
    chosen = {id(r) for r in keep_lines if isinstance(r, Record)}
    keep = {r.line if isinstance(r, Record) else r for r in keep_lines}
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            if _is_jsonl(dataset.path):
                _copy_lines(dataset.path, keep, f)
            else:
                for r in dataset.records:
                    if (id(r) in chosen) if chosen else (r.line in keep):
                        f.write(json.dumps(as_row(r), ensure_ascii=False).encode() + b"\n")
        os.replace(tmp, out)  # a kill mid-write leaves no half file under the name
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _is_jsonl(path: str) -> bool:
    if Path(path).suffix.lower() not in JSONL_EXTS:
        return False
    with open(path, "rb") as f:
        return not f.read(4).startswith(b"PAR1")  # the reader takes Parquet by its header


def _copy_lines(path: str, keep: set[int], f) -> None:
    # Binary lines split on LF as the JSONL reader splits them, so numbers match.
    with open(path, "rb") as src:
        for n, line in enumerate(src, 1):
            if n in keep:
                f.write(line if line.endswith(b"\n") else line + b"\n")


def as_row(record: Record) -> dict[str, Any]:
    """A record in Studio's normal form, as one JSONL row."""
    if record.text is not None:
        return {"text": record.text}
    if record.chosen is not None:
        return {
            "prompt": record.messages,
            "chosen": [{"role": "assistant", "content": record.chosen}],
            "rejected": [{"role": "assistant", "content": record.rejected}],
        }
    return {"messages": record.messages}
