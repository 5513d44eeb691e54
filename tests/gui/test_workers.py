"""Background work and Python's cycle collector: garbage made on a worker thread is collected
on the GUI thread only (a collection on a worker that finalised a Qt object deadlocked the
window: ~QObject waited for the GIL while the GUI thread waited for Qt's lock)."""

import gc
import threading

from PySide6.QtCore import QObject

from studio.gui import workers


class Cycle:
    """Garbage only the cycle collector frees; says on which thread it was freed."""

    freed_on: list[bool] = []

    def __init__(self):
        self.me = self

    def __del__(self):
        Cycle.freed_on.append(threading.current_thread() is threading.main_thread())


def churn() -> list:
    for _ in range(50):
        Cycle()
    # Far past the collector's first threshold (700 allocations): left automatic, Python
    # collects right here, on the worker, and frees the cycles above on it.
    # Kept (returned): the count of young objects stays past the threshold for the GUI's timer.
    return [[] for _ in range(200_000)]


def test_cycles_made_on_a_worker_are_freed_on_the_gui_thread(qtbot):
    Cycle.freed_on = []
    gc.collect()
    owner = QObject()
    done = []
    workers.run_task(owner, churn, on_done=done.append)
    assert not gc.isenabled()  # automatic collection is off while the app runs tasks
    qtbot.waitUntil(lambda: len(done) == 1, timeout=30000)
    qtbot.waitUntil(lambda: len(Cycle.freed_on) == 50, timeout=10000)  # the GUI timer's pass
    assert all(Cycle.freed_on)


def test_the_tests_get_automatic_collection_back():
    workers.collect_garbage_in_gui_thread()
    workers.automatic_garbage_collection()
    assert gc.isenabled()
