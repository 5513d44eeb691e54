import faulthandler
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

STUCK_S = float(os.environ.get("STUDIO_TEST_STUCK_S", "600"))
"""A test still going after this long is taken as hung: every thread's stack is printed and
the run ends (exit 1). A deadlock cannot be interrupted, and one once held CI for its whole
90 minutes with nothing printed. faulthandler's watchdog is a C thread: the tests that check
no thread is left running do not see it."""


_stderr = None


def pytest_configure(config):
    global _stderr
    # The terminal's stderr, taken while pytest's capture is paused: a test's own stderr is a
    # capture file that nobody would print once the watchdog ends the run.
    _stderr = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")


@pytest.fixture(autouse=True)
def hang_watchdog():
    faulthandler.dump_traceback_later(STUCK_S, exit=True, file=_stderr or sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with a ChatML template and a byte-level BPE tokenizer (HF layout)."""
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory):
    """The same tiny model but with no chat template in its tokenizer."""
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny_nt") / "model", chat_template=None)
