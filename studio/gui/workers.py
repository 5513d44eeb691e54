"""The one bridge from background work to the GUI thread.

`run_task(owner, fn, ...)` runs `fn` on a QThread and delivers its progress, result or
exception to methods of `owner` (a QObject in the GUI thread) through queued signals.
Worker code never touches widgets. Every live task is tracked, so the app (and the tests)
can wait for all of them before quitting: no thread is left running.
"""

from __future__ import annotations

import gc
import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal

_live: set[Task] = set()
_collector = None


def collect_garbage_in_gui_thread() -> None:
    """From now on, Python's cycle collector runs only on the GUI thread, on a timer.

    Left automatic, a collection starts on whichever thread happens to allocate, a worker's
    included; when it finalises a Qt object there, ~QObject takes Qt's lock and waits for the
    GIL while the GUI thread holds the GIL and waits for that lock: the window froze for good
    (seen in the tests, a step-time estimate on a worker as the Data page drew its histogram).
    So automatic collection is turned off and a QTimer in the GUI thread collects at the
    thresholds Python would use: pyqtgraph's GarbageCollector does the same, but importing
    pyqtgraph costs 0.6 s before the window's first paint. Called before any worker starts.
    """
    global _collector
    if _collector is None:
        _collector = QTimer()
        _collector.timeout.connect(_collect)
        _collector.start(500)
        gc.disable()


def _collect() -> None:
    young, middle, old = gc.get_count()
    first, second, third = gc.get_threshold()
    if young > first:
        generation = 2 if middle > second and old > third else 1 if middle > second else 0
        gc.collect(generation)


def automatic_garbage_collection() -> None:
    """Undo collect_garbage_in_gui_thread (the tests, between one and the next)."""
    global _collector
    if _collector is not None:
        _collector.stop()
        _collector = None
        gc.enable()


class Cancelled(Exception):
    """Raised inside a task's function when its cancel token is set."""


class Task(QThread):
    progressed = Signal(object, object)
    succeeded = Signal(object)
    failed = Signal(object)

    def __init__(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, with_progress: bool, parent=None
    ):
        super().__init__(parent)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.with_progress = with_progress
        self.cancel_event = threading.Event()
        self.error_text = ""

    def cancel(self) -> None:
        self.cancel_event.set()

    def _progress(self, done, total) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()
        self.progressed.emit(done, total)

    def _forget(self) -> None:
        _live.discard(self)
        self.deleteLater()

    def run(self) -> None:  # on the worker thread
        try:
            kwargs = dict(self.kwargs)
            if self.with_progress:
                kwargs["progress"] = self._progress
            result = self.fn(*self.args, **kwargs)
        except Cancelled:
            return
        except Exception as e:  # delivered to the GUI thread, shown to the user
            self.error_text = traceback.format_exc()
            if not self.cancel_event.is_set():
                self.failed.emit(e)
            return
        if not self.cancel_event.is_set():
            self.succeeded.emit(result)


def run_task(
    owner: QObject,
    fn: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_progress: Callable[[Any, Any], None] | None = None,
    **kwargs: Any,
) -> Task:
    """Run fn(*args, **kwargs) off the GUI thread; callbacks are methods of QObjects.

    When on_progress is given, fn also receives `progress=callable(done, total)`; calling it
    after `task.cancel()` raises `Cancelled` inside fn, which ends the task quietly.
    """
    collect_garbage_in_gui_thread()
    task = Task(fn, args, kwargs, with_progress=on_progress is not None)
    queued = Qt.ConnectionType.QueuedConnection
    if on_done is not None:
        task.succeeded.connect(on_done, queued)
    if on_error is not None:
        task.failed.connect(on_error, queued)
    if on_progress is not None:
        task.progressed.connect(on_progress, queued)
    # A bound method of the task (a QObject living in the GUI thread): runs in the GUI thread.
    task.finished.connect(task._forget, queued)
    _live.add(task)
    task.start()
    return task


def live_tasks() -> list[Task]:
    return [t for t in _live if t.isRunning()]


def wait_all(timeout_ms: int = 30000) -> bool:
    """Cancel every task and wait for it to end (at app exit and after each test)."""
    ok = True
    for task in list(_live):
        task.cancel()
        ok = task.wait(timeout_ms) and ok
        _live.discard(task)
    return ok
