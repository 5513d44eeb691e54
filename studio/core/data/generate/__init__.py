"""Data generation with a local model or an OpenAI-compatible endpoint (no Qt).

`generate_events(GenerateOptions(...), cancel)` yields Started/Progress/Row/Log/Done/Failed;
rows are appended to a JSONL as they are made and a restart continues it (writer.py). The
modes are described in modes.py, the input shapes in inputs.py.
"""

from studio.core.data.generate.options import MODES, GenerateOptions
from studio.core.data.generate.pipeline import generate_events

__all__ = ["MODES", "GenerateOptions", "generate_events", "run_generation"]


def run_generation(opts: GenerateOptions, on_event=None, cancel=None):
    """Run to the end; calls `on_event(event)` for each event and returns the last one."""
    last = None
    for event in generate_events(opts, cancel):
        if on_event is not None:
            on_event(event)
        last = event
    return last
