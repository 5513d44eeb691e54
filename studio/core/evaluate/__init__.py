"""Evaluation: the base model and one or more runs, measured in one pass.

`evaluate_events(EvalOptions(runs=[...]))` yields Log/Progress events and ends with Done (its
`adapter` is the report's folder, RUN/eval/<name>/) or Failed. No Qt here; torch, peft and
lm_eval are imported inside functions.
"""

from studio.core.evaluate.options import EvalOptions
from studio.core.evaluate.pipeline import evaluate_events, run_evaluation
from studio.core.evaluate.report import past_reports, read_report

__all__ = ["EvalOptions", "evaluate_events", "past_reports", "read_report", "run_evaluation"]
