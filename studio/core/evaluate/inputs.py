"""What an evaluation reads, checked before any weights load: the runs (each with an adapter,
all on one base model), the held-out records, and the report's folder.

Every refusal here is a StudioError with one sentence naming what to change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from studio.core.config import RunConfig
from studio.core.data.records import Record
from studio.core.errors import DataError, ModelError, StudioError
from studio.core.evaluate.options import EvalOptions

BASE_KEY = "base"
"""The base model's key in the report (run keys are their folder names, never this one)."""


@dataclass
class RunInput:
    key: str
    """The run's name in the report: its folder name (made unique)."""
    path: str
    """As given."""
    adapter: Path
    """The folder holding adapter_config.json and the weights."""
    run_dir: Path | None
    base_model: str
    cfg: RunConfig | None
    """run.yaml, when the adapter sits in a run folder."""

    @property
    def template(self) -> str:
        return self.cfg.data.template if self.cfg is not None else ""


@dataclass
class EvalData:
    records: list[Record]
    source: str
    """"file" (given with --data) or "validation" (the first run's held-out split)."""
    path: str
    skipped: int = 0
    """Rows of the file that could not be read (each listed by the importer)."""


def _same_base(name: str) -> str:
    """A base model's identity: a local folder by its real path, a hub id as written."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def resolve_run(path: str) -> RunInput:
    from studio.core.infer import find_adapter

    p = Path(path).expanduser()
    if p.is_dir() and (p / "run.yaml").is_file() and not (p / "adapter").exists():
        if not (p / "adapter_config.json").is_file():
            raise ModelError(
                f"runs: {p} has no adapter (no adapter/ folder): the run has not finished; "
                "evaluate one of its checkpoints/step-* folders or train it to the end",
                field="runs",
            )
    try:
        info = find_adapter(p)
    except ModelError as e:
        raise ModelError(f"runs: {e.message.removeprefix('adapter: ')}", field="runs") from None
    if not any(info.folder.glob("adapter_model.*")):
        raise ModelError(
            f"runs: {info.folder} has no adapter weights (adapter_model.safetensors)",
            field="runs",
        )
    if not info.base_model:
        raise ModelError(
            f"runs: {info.folder} does not say which base model it was trained on "
            "(no run.yaml beside it, no base_model_name_or_path in adapter_config.json)",
            field="runs",
        )
    cfg = RunConfig.load(info.run_dir / "run.yaml") if info.run_dir is not None else None
    name = info.run_dir.name if info.run_dir is not None else info.folder.name
    if info.run_dir is not None and info.folder.parent.name == "checkpoints":
        name = f"{info.run_dir.name}@{info.folder.name}"
    return RunInput(name, str(path), info.folder, info.run_dir, info.base_model, cfg)


def resolve_runs(paths: list[str]) -> list[RunInput]:
    """Each run with its adapter; all on one base model (one pass loads one base)."""
    runs = [resolve_run(p) for p in paths]
    first = runs[0]
    for run in runs[1:]:
        if _same_base(run.base_model) != _same_base(first.base_model):
            raise StudioError(
                f"runs: {run.key} was trained on {run.base_model} but {first.key} on "
                f"{first.base_model}; one evaluation loads one base model, so evaluate them "
                "separately",
                field="runs",
            )
    seen: dict[str, int] = {BASE_KEY: 1}
    for run in runs:  # two checkpoints of one run, or two runs both called "run"
        n = seen.get(run.key, 0)
        seen[run.key] = n + 1
        if n:
            run.key = f"{run.key}-{n + 1}"
    return runs


def load_eval_data(opts: EvalOptions, first: RunInput) -> EvalData:
    """--data, else the first run's validation split (the records it did not train on)."""
    from studio.core.data.formats import load_dataset
    from studio.core.data.pairs import as_answers

    # A preference run is evaluated on its prompts, its chosen answers as the references.
    if opts.data:
        if not Path(opts.data).expanduser().is_file():
            raise DataError(f"data: no such file: {opts.data}", field="data")
        try:
            ds = load_dataset(Path(opts.data).expanduser())
        except DataError as e:
            raise DataError(f"data: {e.message}", field="data") from None
        where = str(Path(opts.data).expanduser().resolve())
        return EvalData(as_answers(ds.records), "file", where, ds.skipped)
    if first.cfg is None:
        raise DataError(
            f"data: {first.key} is not in a run folder (no run.yaml), so it has no validation "
            "split; pass --data FILE",
            field="data",
        )
    from studio.core.data.split import load_run_split

    split = load_run_split(first.cfg.data, first.cfg.train.seed)
    if not split.val:
        raise DataError(
            f"data: {first.key} held no records out for validation (data.val_split is 0 and "
            "no data.eval_path); pass --data FILE with records it did not train on",
            field="data",
        )
    path = first.cfg.data.eval_path or first.cfg.data.path
    skipped = split.val_file.skipped if split.val_file is not None else 0
    return EvalData(as_answers(list(split.val)), "validation", path, skipped)


def report_home(first: RunInput) -> Path:
    """RUN/eval/ of the first run (beside a bare adapter folder when there is no run)."""
    home = first.run_dir if first.run_dir is not None else first.adapter.parent
    return home / "eval"


def output_folder(opts: EvalOptions, first: RunInput) -> Path:
    name = opts.name or time.strftime("eval-%Y%m%d-%H%M%S")
    folder = report_home(first) / name
    if folder.exists() and not opts.overwrite:
        raise StudioError(
            f"name: {folder} already holds a report; choose another --name or pass --overwrite",
            field="name",
        )
    return folder
