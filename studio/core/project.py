"""Projects: a folder holding `project.yaml` and a `runs/` folder of run folders.

```
PROJECT/project.yaml    name, dataset, model, last settings (a RunConfig as a dict)
PROJECT/runs/RUN/       run.yaml, events.jsonl, checkpoints/, adapter/  (DESIGN.md)
```

A run folder written by the CLI anywhere on disk opens too (`open_run`). No Qt here.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from studio.core import paths, runs
from studio.core.config import FLAGS, RunConfig, flat_settings, read_yaml
from studio.core.errors import ConfigError, StudioError
from studio.core.presets import (  # noqa: F401 - re-exported
    DEFAULT_PRESET,
    PRESETS,
    Preset,
    apply_preset,
    demo_settings,
    with_settings,
)

PROJECT_FILE = "project.yaml"
RUN_FILE = "run.yaml"
EVENTS_FILE = "events.jsonl"


@dataclass
class RunSummary:
    """What the app lists about one run folder, read without loading anything heavy."""

    folder: Path
    status: str = "not started"
    """not started, running, completed, stopped or failed (from the last event)."""
    step: int = 0
    total_steps: int = 0
    final_loss: float | None = None
    message: str = ""
    modified: float = 0.0

    @property
    def name(self) -> str:
        return self.folder.name

    def config(self) -> RunConfig:
        return RunConfig.load(self.folder / RUN_FILE)


@dataclass
class Project:
    folder: Path
    name: str = ""
    dataset: str = ""
    """Path of the training data file."""
    model: str = ""
    """Local model folder or hub id."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The last RunConfig used in this project, as a dict (see `config()`)."""
    created: float = field(default_factory=time.time)

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @property
    def file(self) -> Path:
        return self.folder / PROJECT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "settings": self.settings,
            "created": self.created,
        }

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(exist_ok=True)
        tmp = self.file.with_suffix(".yaml.tmp")
        tmp.write_text(
            yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        tmp.replace(self.file)

    def config(self) -> RunConfig:
        """The project's last settings as a RunConfig, with its dataset and model filled in.

        Settings that no longer validate (an older file, a hand edit) fall back to defaults.
        """
        try:
            cfg = RunConfig.from_dict(self.settings) if self.settings else RunConfig()
        except ConfigError:
            cfg = RunConfig()
        if self.dataset and not cfg.data.path:
            cfg.data.path = self.dataset
        if self.model and not cfg.model.path:
            cfg.model.path = self.model
        return cfg

    def remember(self, cfg: RunConfig) -> None:
        """Store cfg as the last settings (and its dataset/model), then save."""
        self.settings = cfg.to_dict()
        self.settings["output"] = ""
        self.dataset = cfg.data.path or self.dataset
        self.model = cfg.model.path or self.model
        self.save()

    def runs(self) -> list[RunSummary]:
        """Run folders under runs/, newest first."""
        if not self.runs_dir.is_dir():
            return []
        found = [read_run(p) for p in self.runs_dir.iterdir() if (p / RUN_FILE).is_file()]
        return sorted(found, key=lambda r: r.modified, reverse=True)

    def new_run_dir(self, prefix: str = "run") -> Path:
        """A fresh, empty run folder name under runs/ (not created)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = self.runs_dir / f"{prefix}-{stamp}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path


def slugify(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    return slug or "project"


def create_project(
    name: str, parent: str | Path | None = None, *, dataset: str = "", model: str = ""
) -> Project:
    """Make a new project folder `parent/<name>` (parent defaults to the user data dir)."""
    if not name.strip():
        raise StudioError("Give the project a name.", field="name")
    parent = Path(parent) if parent else paths.projects_dir()
    folder = parent / slugify(name)
    if (folder / PROJECT_FILE).exists():
        raise StudioError(
            f"A project already exists in {folder}; open it or choose another name.", field="name"
        )
    project = Project(folder=folder, name=name.strip(), dataset=dataset, model=model)
    project.save()
    return project


def open_project(folder: str | Path) -> Project:
    """Open a project folder. A folder without project.yaml but with runs/ is adopted."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.name == PROJECT_FILE:
        folder = folder.parent
    file = folder / PROJECT_FILE
    if not file.exists():
        if (folder / "runs").is_dir():
            return Project(folder=folder, name=folder.name)
        raise StudioError(f"{folder} is not a Studio project (no {PROJECT_FILE} in it).")
    data = read_yaml(file, StudioError, field="project") or {}
    if not isinstance(data, dict):
        raise StudioError(f"{file} must hold a mapping (name, dataset, model, settings).")
    # A hand-edited value of the wrong type falls back to its default, as settings that no
    # longer validate do (Project.config): the project still opens.
    settings = data.get("settings")
    return Project(
        folder=folder,
        name=_text(data.get("name")) or folder.name,
        dataset=_text(data.get("dataset")),
        model=_text(data.get("model")),
        settings=settings if isinstance(settings, dict) else {},
        created=_seconds(data.get("created")),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0


def demo_project(parent: str | Path | None = None) -> Project:
    """The demo project (bundled demo data and model), created on first use."""
    demo = paths.demo_dir()
    if not paths.demo_available():
        raise StudioError(f"The bundled demo is missing: expected data.jsonl and model/ in {demo}.")
    folder = (Path(parent) if parent else paths.projects_dir()) / "Demo"
    if (folder / PROJECT_FILE).exists():
        return open_project(folder)
    cfg = RunConfig()
    cfg.data.path = str(demo / "data.jsonl")
    cfg.model.path = str(demo / "model")
    # The default preset as sized for the demo: the same settings `studio train --demo` uses.
    try:
        cfg = with_settings(cfg, demo_settings())
    except StudioError:  # a broken demo folder: the wizard measures it again and says why
        pass
    project = Project(folder=folder, name="Demo")
    project.remember(cfg)
    return project


def read_run(folder: str | Path) -> RunSummary:
    """Summarise a run folder the way the Train page sees it (studio.core.runs): a run whose
    process died without a last event reads as failed, not as running for ever."""
    folder = Path(folder)
    events_file = folder / EVENTS_FILE
    probe = events_file if events_file.exists() else folder / RUN_FILE
    state = runs.run_state(folder)
    return RunSummary(
        folder=folder,
        status=state.status,
        step=state.step,
        total_steps=state.total_steps,
        final_loss=state.final_loss,
        message=state.message,
        modified=probe.stat().st_mtime if probe.exists() else 0.0,
    )


def open_run(folder: str | Path) -> RunSummary:
    folder = Path(folder).expanduser()
    if not (folder / RUN_FILE).is_file():
        raise StudioError(f"{folder} is not a run folder (no {RUN_FILE} in it).")
    return read_run(folder)


# --- presets: sized to the data and the model in studio.core.presets; re-exported here ----
# (the wizard, the tests and older callers import them from this module)

# --- the equivalent command line -------------------------------------------------------

_ALWAYS = ("model.path", "data.path", "output")


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def changed_without_flag(cfg: RunConfig) -> list[str]:
    """Non-default settings that have no `studio train` flag (they need --config)."""
    mine, default = flat_settings(cfg), flat_settings(RunConfig())
    return [k for k, v in mine.items() if k not in FLAGS and v != default.get(k)]


def command_line(cfg: RunConfig, config_path: str | Path | None = None) -> str:
    """The `studio train ...` command equivalent to cfg (flags only for non-default values).

    When some changed setting has no flag and `config_path` is given, the command starts
    from `--config config_path` so it stays exactly equivalent.
    """
    mine, default = flat_settings(cfg), flat_settings(RunConfig())
    parts = ["studio", "train"]
    if config_path and changed_without_flag(cfg):
        parts += ["--config", str(config_path)]
    for key, flag in FLAGS.items():
        value = mine[key]
        if key not in _ALWAYS and value == default[key]:
            continue
        if key in _ALWAYS and not value:
            continue
        if isinstance(value, bool):  # --x / --no-x
            parts.append(flag if value else "--no-" + flag[2:])
            continue
        parts += [flag, _fmt(value)]
    return shlex.join(parts)
