"""Projects, run folders, presets and the equivalent command line."""

import json
import shlex

import pytest

from studio.core import paths
from studio.core.config import RunConfig, TrainConfig
from studio.core.errors import StudioError
from studio.core.project import (
    PRESETS,
    apply_preset,
    changed_without_flag,
    command_line,
    create_project,
    demo_project,
    open_project,
    open_run,
)


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_paths_follow_studio_home(studio_home):
    assert paths.data_dir() == studio_home / "data"
    assert paths.config_dir() == studio_home / "config"
    assert paths.projects_dir() == studio_home / "data" / "projects"
    assert paths.settings_file().parent == studio_home / "config"
    assert paths.demo_dir().name == "demo" and paths.demo_dir().parent.name == "resources"


def test_create_open_round_trip(studio_home):
    p = create_project("My first tune!", dataset="/d/data.jsonl", model="/m")
    assert p.folder == studio_home / "data" / "projects" / "My-first-tune"
    assert (p.folder / "project.yaml").is_file() and p.runs_dir.is_dir()
    cfg = apply_preset(p.config(), "Quick test")
    p.remember(cfg)
    q = open_project(p.folder)
    assert (q.name, q.dataset, q.model) == ("My first tune!", "/d/data.jsonl", "/m")
    assert q.config().train.max_steps == 30 and q.config().data.path == "/d/data.jsonl"
    with pytest.raises(StudioError, match="already exists"):
        create_project("My first tune!")
    with pytest.raises(StudioError, match="name"):
        create_project("  ")


def test_open_rejects_non_project_and_adopts_cli_runs(tmp_path):
    with pytest.raises(StudioError, match="not a Studio project"):
        open_project(tmp_path)
    run = tmp_path / "runs" / "cli-run"
    run.mkdir(parents=True)
    RunConfig(output=str(run)).save(run / "run.yaml")
    events = [
        {"type": "start", "total_steps": 10},
        {"type": "step", "step": 10, "loss": 1.5},
        {"type": "done", "step": 10, "adapter": "a", "status": "completed", "final_loss": 1.25},
    ]
    (run / "events.jsonl").write_text(
        "\n".join(json.dumps(e) for e in events) + "\n{torn", encoding="utf-8"
    )
    project = open_project(tmp_path)
    [summary] = project.runs()
    assert summary.name == "cli-run" and summary.status == "completed"
    assert summary.final_loss == 1.25 and summary.total_steps == 10
    assert open_run(run).config().output == str(run)
    with pytest.raises(StudioError, match="not a run folder"):
        open_run(tmp_path)


def test_failed_run_status(tmp_path):
    project = create_project("p", tmp_path)
    run = project.new_run_dir()
    run.mkdir(parents=True)
    RunConfig().save(run / "run.yaml")
    (run / "events.jsonl").write_text(
        '{"type": "start", "total_steps": 3}\n{"type": "error", "message": "out of memory"}\n'
    )
    [summary] = project.runs()
    assert summary.status == "failed" and summary.message == "out of memory"
    assert project.new_run_dir() != run


def test_a_run_that_died_without_a_last_event_reads_as_failed(tmp_path):
    import os
    import time

    project = create_project("p", tmp_path)
    run = project.new_run_dir()
    run.mkdir(parents=True)
    RunConfig().save(run / "run.yaml")
    events = run / "events.jsonl"
    events.write_text(
        '{"type": "start", "total_steps": 9}\n{"type": "step", "step": 4, "loss": 2.0}\n'
    )
    old = time.time() - 3600  # nothing written for an hour, no process on record
    os.utime(events, (old, old))
    [summary] = project.runs()
    assert summary.status == "failed" and summary.step == 4 and summary.final_loss == 2.0


def test_presets_are_valid_and_distinct():
    assert list(PRESETS) == ["Quick test", "Balanced", "Thorough"]
    cfgs = [apply_preset(RunConfig(), name) for name in PRESETS]
    assert cfgs[0].train.max_steps > 0
    assert cfgs[0].lora.r < cfgs[1].lora.r < cfgs[2].lora.r
    assert all(len(p.summary) > 40 for p in PRESETS.values())
    for cfg in cfgs:  # a preset survives the YAML round trip
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
    # Every preset sets every planned key, so switching leaves nothing of the previous one.
    assert apply_preset(apply_preset(RunConfig(), "Thorough"), "Balanced") == cfgs[1]


def test_demo_project_when_demo_is_missing_or_present(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "demo_dir", lambda: tmp_path / "nodemo")
    with pytest.raises(StudioError, match="demo is missing"):
        demo_project()
    demo = tmp_path / "demo"
    (demo / "model").mkdir(parents=True)
    (demo / "model" / "config.json").write_text("{}")
    (demo / "data.jsonl").write_text("{}\n")
    monkeypatch.setattr(paths, "demo_dir", lambda: demo)
    project = demo_project()
    assert project.name == "Demo" and project.dataset == str(demo / "data.jsonl")
    assert project.config().model.path == str(demo / "model")
    assert demo_project().folder == project.folder  # opened, not re-created


def test_command_line_is_equivalent():
    cfg = RunConfig(output="/runs/r 1", train=TrainConfig(epochs=2, seq_len=1024, packing=False))
    cfg.model.path, cfg.data.path = "Qwen/Qwen2.5-0.5B", "/data/my data.jsonl"
    cfg.lora.r, cfg.lora.target_modules = 8, ["q_proj", "v_proj"]
    cmd = command_line(cfg)
    args = shlex.split(cmd)
    assert args[:2] == ["studio", "train"]
    pairs = dict(zip(args[2::2], args[3::2], strict=False))
    assert args[args.index("--model") + 1] == "Qwen/Qwen2.5-0.5B"
    assert args[args.index("--data") + 1] == "/data/my data.jsonl"
    assert args[args.index("--output") + 1] == "/runs/r 1"
    assert args[args.index("--epochs") + 1] == "2"
    assert args[args.index("--lora-rank") + 1] == "8"
    assert args[args.index("--target-modules") + 1] == "q_proj,v_proj"
    assert "--no-packing" in args and "--lr" not in pairs  # defaults are left out
    assert "--config" not in args


def test_command_line_uses_config_for_settings_without_flags():
    cfg = RunConfig(
        train=TrainConfig(scheduler="linear", gradient_checkpointing=True, mixed_precision="off")
    )
    assert changed_without_flag(cfg) == ["train.mixed_precision"]
    args = shlex.split(command_line(cfg, "/r/run.yaml"))
    assert args[2:4] == ["--config", "/r/run.yaml"] and "--gradient-checkpointing" in args
    assert args[args.index("--scheduler") + 1] == "linear"
    assert "--config" not in command_line(
        RunConfig(train=TrainConfig(scheduler="linear")), "/r/run.yaml"
    )


def test_command_line_round_trips_through_studio_train(tmp_path):
    """The command the app shows, parsed by `studio train`, gives back the same RunConfig."""
    import argparse

    from studio.commands import train

    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    cfg = apply_preset(RunConfig(output=str(tmp_path / "run")), "Thorough")
    cfg.model.path, cfg.data.path = str(tmp_path / "model"), str(tmp_path / "d.jsonl")
    cfg.model.double_quant, cfg.lora.use_dora, cfg.train.packing = False, True, False
    cfg.train.weight_decay, cfg.data.train_on, cfg.lora.r = 0.1, "all", 4
    cfg.lora.target_modules = ["q_proj", "v_proj"]
    args = shlex.split(command_line(cfg))[1:]
    assert train.build_config(parser.parse_args(args)) == cfg
