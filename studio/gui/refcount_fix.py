"""A guard against a reference-count bug in some PySide6 builds on Python < 3.12.

PySide6 6.12.0 on CPython 3.11 drops a reference to `None` on every call of a C++ method
that returns void (`label.setText(...)`) and to `True` on every `signal.emit(...)`, without
ever having taken it. On Python 3.12+ these objects are immortal (PEP 683) and nothing
happens; on 3.11 their count reaches zero after a few thousand calls and the interpreter
aborts ("Fatal Python error: none_dealloc"). Live plots make thousands of such calls a
minute, so a training run would take the window down within seconds to minutes.

`apply()` detects the bug at run time (it does nothing where it is absent) and gives None,
True and False a count so large that no session can exhaust it, which is what 3.12 does.
These objects are never freed in a healthy interpreter, so this changes nothing else.
The real fix is a PySide6 without the bug (6.11.x, or a later fixed release).
"""

from __future__ import annotations

import ctypes
import sys

HEADROOM = 1 << 40
_applied = False


def bug_present() -> bool:
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - 64


def apply() -> bool:
    """Returns True when the bug was found and the guard applied (once a process)."""
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return _applied
    if not bug_present():
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every object in a release build of CPython 3.11.
        ctypes.c_ssize_t.from_address(id(obj)).value += HEADROOM
    _applied = True
    return True
