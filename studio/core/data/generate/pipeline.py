"""`generate_events(opts, cancel)`: a data generation as a stream of events.

Started (total_steps: the planned rows; start_step: rows already in the output from an
earlier run; num_examples: prompts read), then per batch a Row for each row written (its
index in the output file and the record) and a Progress (done/total rows, eta_s), Log lines
(skipped input rows, skipped items), and at the end Done (step: rows in the file, adapter: the
output path, status completed or stopped) or Failed (kind "input" for bad input: no prompt,
an unreachable endpoint, a model that will not load; "oom"; "error"). Every row reported
by a Row event is already on disk, so nothing valid is lost whichever way it ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from studio.core.data.generate.backends import open_backend
from studio.core.data.generate.inputs import read_items
from studio.core.data.generate.modes import Generator, Task
from studio.core.data.generate.options import GenerateOptions
from studio.core.data.generate.writer import RowWriter
from studio.core.data.records import first_problems
from studio.core.errors import StudioError
from studio.core.events import Done, Event, Failed, Log, Progress, Row, Started
from studio.core.generation import CancelToken


class _Cancelled(Exception):
    pass


def generate_events(opts: GenerateOptions, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Generate as asked, continuing the output file when it holds rows of the same mode."""
    cancel = cancel or CancelToken()
    writer = backend = None
    try:
        items, problems = read_items(opts.input)
        if problems:
            yield Log(
                f"{len(problems)} input row(s) skipped: {first_problems(problems)}", level="warning"
            )
        writer = RowWriter(opts.output, opts.mode, opts.overwrite)
        yield Log(f"{len(items)} prompt(s) from {opts.input}; loading the model")
        backend = open_backend(opts, lambda: cancel.cancelled)
        yield from _generate(opts, items, backend, writer, cancel)
    except _Cancelled:
        rows = len(writer.rows) if writer else 0
        yield Log(f"generation stopped; the {rows} row(s) written are kept", level="warning")
        yield Done(step=rows, adapter=opts.output, status="stopped")
    except StudioError as e:
        yield Failed(e.message, kind="input")
    except MemoryError:
        yield Failed("out of memory while generating: use a smaller --batch-size", kind="oom")
    except Exception as e:  # a bug or a library failure: one line; the rows written stay
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "out of memory" in text.lower():
            yield Failed(f"out of memory while generating ({text}): use a smaller --batch-size", kind="oom")  # fmt: skip
        else:
            yield Failed(f"the generation failed: {type(e).__name__}: {text}", kind="error")
    finally:
        if writer is not None:
            writer.close()
        if backend is not None:
            backend.close()


def _generate(opts, items, backend, writer: RowWriter, cancel) -> Iterator[Event]:
    from studio.core.data.generate.backends import EndpointBackend

    log: list[str] = []
    gen = Generator(opts, items, backend, log.append)
    if opts.judge_url and opts.mode == "pairs":
        from studio.core.evaluate.judge import Judge

        gen.judge = Judge(opts.judge_url, opts.judge_model, opts.judge_key)
    where = backend.describe()
    if opts.mode == "self-instruct":
        total = opts.count
        batches = gen.self_instruct(writer.rows)
    else:
        plan = gen.plan()
        total = len(plan)
        batches = _planned(gen, plan, writer.done, opts.batch_size, cancel)
    done = min(len(writer.done), total)
    yield Started(total_steps=total, run_dir=opts.output, start_step=done, num_examples=len(items))
    verb = "continuing" if done else "writing"
    yield Log(f"{verb} {opts.output}: {done} of {total} row(s) done; {opts.mode} with {where}")
    start, made = time.monotonic(), 0
    for rows in batches:
        if cancel.cancelled:  # the batch was cut short: its rows may be partial, keep none
            raise _Cancelled()
        for _task, record in rows:
            if record is not None:
                index = writer.append(record)
                yield Row(index=index, record=record)
                made += 1
        while log:
            yield Log(log.pop(0), level="warning")
        done += len(rows)
        rate = (time.monotonic() - start) / max(1, made)
        yield Progress(done, total, stage="generating", eta_s=rate * max(0, total - done))
        if cancel.cancelled:
            raise _Cancelled()
    while log:
        yield Log(log.pop(0), level="warning")
    kind = "parallel requests" if isinstance(backend, EndpointBackend) else "batches"
    yield Log(
        f"wrote {made} row(s) in {time.monotonic() - start:.1f}s ({kind} of {opts.batch_size})"
    )
    yield Done(step=len(writer.rows), adapter=opts.output, status="completed")


def _planned(gen: Generator, plan: list[Task], done: set, size: int, cancel):
    """The plan's batches, aligned to the plan (items 0..B-1, B..2B-1, ...) so a restart
    groups the items as the first run did and their seeds give the same rows; items
    already in the output are left out."""
    for start in range(0, len(plan), size):
        todo = [t for t in plan[start : start + size] if t.key not in done]
        if todo:
            if cancel.cancelled:
                raise _Cancelled()
            yield gen.run(todo)
