"""lm-evaluation-harness on the model already loaded (`HFLM(pretrained=model)`), offline.

Tasks come from local files only: a task YAML, or a folder of them, given as the harness's
include path (its built-in task index is not even read, so nothing reaches for the network
and start-up stays quick). A task's data must be local too (`dataset_path: json` with
`dataset_kwargs: {data_files: ...}`). Needs the `studio[eval]` extra; without it the report's
lm-eval section says how to get it and everything else is still measured.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from studio.core.errors import ConfigError

MISSING = 'lm-evaluation-harness is not installed: pip install "studio[eval]"'


def installed() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def _task_name(path: Path) -> str:
    """The `task:` of a task YAML ("" for a file that is not one, e.g. a shared template)."""
    import yaml

    try:
        # The harness's YAML has custom tags (!function); only the top-level name matters here.
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.startswith("task:"):
                value = yaml.safe_load(line.split(":", 1)[1].strip() or "''")
                return str(value) if isinstance(value, (str, int)) else ""
    except (OSError, yaml.YAMLError):
        return ""
    return ""


def find_tasks(spec: str) -> tuple[Path, list[str]]:
    """(include folder, task names) for a task YAML or a folder of them."""
    p = Path(spec).expanduser()
    if p.is_file():
        name = _task_name(p)
        if not name:
            raise ConfigError(f"lm_eval_tasks: {p} has no `task:` name", field="lm_eval_tasks")
        return p.parent.resolve(), [name]
    if p.is_dir():
        names = sorted({n for f in p.glob("*.y*ml") if (n := _task_name(f))})
        if not names:
            raise ConfigError(
                f"lm_eval_tasks: {p} holds no task YAML (a file with a `task:` name)",
                field="lm_eval_tasks",
            )
        return p.resolve(), names
    raise ConfigError(f"lm_eval_tasks: no such file or folder: {p}", field="lm_eval_tasks")


def _clean(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} with the harness's ",none" filter suffix dropped."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        row = {}
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = key.removesuffix(",none")
                row[name] = None if not math.isfinite(float(value)) else float(value)
        out[task] = row
    return out


def run_tasks(model, tokenizer, include: Path, names: list[str], *, limit=None, batch_size=1):
    """Run `names` on `model` (as it is now: an adapter on or off); {task: {metric: value}}."""
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # The harness warns at length that a model object ignores its loading arguments: noise here.
    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include), include_defaults=False)
    out = simple_evaluate(
        model=lm,
        tasks=list(names),
        task_manager=manager,
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,
    )
    return _clean((out or {}).get("results", {}))
