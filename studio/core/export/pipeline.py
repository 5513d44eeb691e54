"""One export, as a generator of events: the CLI progress bar and the Export page share it.

Everything is written into `.tmp-NAME` beside the target folder and renamed into place when
whole, so a failure, a cancel or a kill leaves nothing half-written under the target name
(a stale `.tmp-NAME` is removed by the next export). `export.json` in the folder says what
was written, sizes, checksums and the verification figures.
"""

from __future__ import annotations

import errno
import hashlib
import json
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from studio.core.errors import ModelError, StudioError
from studio.core.events import Done, Event, Failed, Log, Progress
from studio.core.export.errors import Cancelled, ExportError
from studio.core.export.options import BITS_PER_WEIGHT, K_QUANTS, ExportOptions

# --- sizes and disk space --------------------------------------------------------------


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def expected_bytes(num_params: int, target: str, quant: str, dtype_bytes: int = 2) -> int:
    """What the export will write, roughly (the K-quants' f16 intermediate included)."""
    if target == "hf":
        return num_params * dtype_bytes
    if target == "onnx":
        return num_params * 4  # exported in fp32: onnxruntime's CPU kernels
    if target == "lora-gguf":
        return 0  # the adapter: small next to anything else; sized from its file instead
    size = int(num_params * BITS_PER_WEIGHT[quant] / 8)
    return size + (num_params * 2 if quant in K_QUANTS else 0)


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_free_space(final: Path, need: int) -> None:
    where = _existing_parent(final.parent)
    free = shutil.disk_usage(where).free
    margin = need // 10 + 16 * 1024 * 1024
    if free < need + margin:
        raise ExportError(
            f"not enough free space in {where}: this export needs about {human(need + margin)} "
            f"and {human(free)} is free; free some space or choose another output folder"
        )


def _disk_error(e: OSError, final: Path, need: int) -> ExportError:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG):
        return ExportError(
            f"the disk filled up while writing the export (it needs about {human(need)}); "
            f"nothing was written to {final}; free some space or choose another output folder"
        )
    return ExportError(
        f"could not write the export to {final}: {e.strerror or e} "
        f"({getattr(e, 'filename', '') or 'a file inside it'}); nothing was written there"
    )


# --- the target folder -----------------------------------------------------------------


def safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return name.lower() or "model"


def default_output(opts: ExportOptions, run_dir: Path | None, adapter: Path, dtype: str) -> Path:
    """RUN/exports/<target>-<type>: one folder per kind, so a run's exports sit together."""
    home = run_dir if run_dir is not None else adapter.parent
    kind = {"hf": f"hf-{dtype}", "onnx": "onnx"}.get(opts.target, f"{opts.target}-{opts.quant}")
    return home / "exports" / kind


def check_target(final: Path, overwrite: bool, keep: tuple[Path | None, ...] = ()) -> None:
    """Refuse a target that is a file, holds files (unless overwrite), or would replace a
    folder the export reads or that holds it (the run, its adapter, the base model)."""
    from studio.core.checkpoint import recover_folder

    recover_folder(final)  # an earlier export cut between its renames counts as there
    for folder in keep:
        if folder is None:
            continue
        folder = Path(folder).resolve()
        if final == folder or folder.is_relative_to(final):
            raise ExportError(
                f"output: {final} holds {folder}, which the export reads; choose another "
                "output folder (by default it goes under RUN/exports/)"
            )
    if final.exists() and not final.is_dir():
        raise ExportError(f"output: {final} is a file; give a folder to export into")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise ExportError(
            f"output: {final} already holds files; choose another folder, or pass --overwrite "
            "to replace it (the old files stay until the new export is whole)"
        )


# --- running a blocking stage while yielding its progress ------------------------------


def run_stage(stage: str, fn: Callable, cancel: threading.Event, **kwargs) -> Iterator[Event]:
    """Run fn(progress=, log=, cancel=, **kwargs) on a thread; yield its progress and notes
    as events; return its result (`value = yield from run_stage(...)`)."""
    q: queue.Queue = queue.Queue()
    out: dict = {}
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled()
        q.put(("progress", done, total))

    def target() -> None:
        try:
            out["value"] = fn(
                progress=progress, log=lambda m: q.put(("log", m)), cancel=cancel.is_set, **kwargs
            )
        except BaseException as e:  # re-raised on the generator's thread
            out["error"] = e
        finally:
            q.put(("end",))

    worker = threading.Thread(target=target, name=f"export-{stage}", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item[0] == "end":
                finished = True
                break
            if item[0] == "log":
                yield Log(item[1])
            else:
                done, total = item[1], item[2]
                elapsed = time.monotonic() - start
                eta = elapsed / done * (total - done) if done else 0.0
                yield Progress(done, total, stage=stage, eta_s=eta)
    finally:
        if not finished:  # the consumer went away (Ctrl+C, GUI closed): stop the worker
            cancel.set()
            # Its writes go into the temporary folder the caller removes: wait for it first.
            worker.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


# --- the report ------------------------------------------------------------------------


def file_entries(folder: Path) -> list[dict]:
    entries = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        entries.append(
            {
                "name": f.relative_to(folder).as_posix(),
                "bytes": f.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        )
    return entries


def write_report(folder: Path, report: dict) -> None:
    report["files"] = file_entries(folder)
    (folder / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# --- the export ------------------------------------------------------------------------


def export_events(opts: ExportOptions, cancel: threading.Event | None = None) -> Iterator[Event]:
    """Export as asked; yields Log/Progress events and ends with Done or Failed.

    Bad input is a Failed event of kind "input" (the CLI's exit 2); a cancel ends with
    Done(status="stopped") and leaves nothing under the target name.
    """
    from studio.core.checkpoint import prepare_tmp

    cancel = cancel or threading.Event()
    tmp: Path | None = None
    final: Path | None = None
    need = 0
    try:
        from studio.core.export import targets

        plan = targets.plan(opts)
        final, need = plan.output, plan.need
        check_target(final, opts.overwrite, (plan.info.folder, plan.info.run_dir, plan.base_dir))
        check_free_space(final, need)
        yield Log(f"exporting {plan.source_name} as {plan.describe} to {final}")
        tmp = prepare_tmp(final)
        started = time.monotonic()
        report = yield from targets.write(plan, tmp, cancel)
        if cancel.is_set():
            raise Cancelled()
        report.update(
            seconds=round(time.monotonic() - started, 2),
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        write_report(tmp, report)
        from studio.core.checkpoint import commit_tmp

        commit_tmp(tmp, final)
        tmp = None
        total = sum(f["bytes"] for f in report["files"])
        count = len(report["files"])
        yield Log(f"wrote {count} file{'s' if count != 1 else ''} ({human(total)}) to {final}")
        yield Done(step=0, adapter=str(final), status="completed")
    except Cancelled:
        yield Log("export cancelled; nothing was written", level="warning")
        yield Done(step=0, adapter="", status="stopped")
    except OSError as e:
        if tmp is None:  # nothing written yet: a file the export reads
            where = getattr(e, "filename", "") or "a file it needs"
            yield Failed(f"could not read {where}: {e.strerror or e}", kind="input")
        else:
            yield Failed(
                _disk_error(e, final or Path(opts.output or "."), need).message, kind="input"
            )
    except StudioError as e:
        yield Failed(e.message, kind="input")
    except MemoryError:
        yield Failed(
            "out of memory while exporting: close other programs, or export on a machine with "
            "more memory (the merge needs about one 16-bit copy of the model)",
            kind="oom",
        )
    except Exception as e:  # a bug or a library failure: one line, and still nothing half-written
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "can't allocate memory" in text or "out of memory" in text.lower():
            yield Failed(f"out of memory while exporting ({text})", kind="oom")
        else:
            yield Failed(f"the export failed: {type(e).__name__}: {text}", kind="error")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run_export(opts: ExportOptions, on_event: Callable[[Event], None] | None = None, cancel=None):
    """Run an export to its end; returns the last event (Done or Failed)."""
    last = None
    for event in export_events(opts, cancel):
        if on_event is not None:
            on_event(event)
        last = event
    return last


__all__ = ["ExportError", "ModelError", "export_events", "run_export"]
