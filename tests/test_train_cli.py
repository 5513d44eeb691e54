"""`studio train` from the command line: flags, config files, exit codes, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.cli import main, normalize_argv
from studio.core.config import RunConfig
from tests.test_train import write_data


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.jsonl", n=12)


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Runs without --output go to ./runs: keep them out of the repository."""
    monkeypatch.chdir(tmp_path)


def test_underscore_spellings_are_accepted():
    assert normalize_argv(["--lora_rank", "8", "--max_steps=3", "-x", "a_b"]) == [
        "--lora-rank",
        "8",
        "--max-steps=3",
        "-x",
        "a_b",
    ]


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--lora-rank", "0"], "lora.r"),
        (["--lr", "-0.001"], "train.lr"),
        (["--seq-len", "4096"], "train.seq_len"),
        (["--lora-dropout", "1.5"], "lora.lora_dropout"),
        (["--target-modules", "nope_proj"], "lora.target_modules"),
    ],
)
def test_bad_settings_exit_2_naming_the_field(tiny_model, data, tmp_path, capsys, extra, field):
    code, _, err = run_cli(
        [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "r"),
            "--quiet",
            *extra,
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith("error: ") and field in err and "Traceback" not in err


def test_missing_model_folder_exits_2_and_leaves_no_run_folder(data, tmp_path, capsys):
    out = tmp_path / "runs" / "new"
    code, _, err = run_cli(
        ["train", "--model", str(tmp_path / "nope"), "--data", str(data), "--quiet",
         "--output", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 2 and "model.path" in err and "no such folder" in err
    assert not out.exists()  # a run that never started does not clutter the history
    # A folder the app prepared (with its run.yaml) keeps the error for the Train page.
    from studio.core.config import RunConfig
    from studio.core.events import read_events

    prepared = tmp_path / "runs" / "from-app"
    prepared.mkdir(parents=True)
    RunConfig(output=str(prepared)).save(prepared / "run.yaml")
    code, _, _ = run_cli(
        ["train", "--model", str(tmp_path / "nope"), "--data", str(data), "--quiet",
         "--output", str(prepared)],
        capsys,
    )  # fmt: skip
    assert code == 2 and read_events(prepared / "events.jsonl")[-1].type == "error"


def test_unreadable_data_exits_2(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\x00\x01\x02\xff" * 100)
    code, _, err = run_cli(
        [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(bad),
            "--output",
            str(tmp_path / "r"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "data.path" in err and "bad.jsonl" in err and "Traceback" not in err
    # A run folder made for this run only is gone (the app's own folders keep the error: see
    # test_missing_model_folder_exits_2_and_leaves_no_run_folder).
    assert not (tmp_path / "r").exists()


def test_pickle_weights_are_refused_unless_allowed(tiny_model, data, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    code, _, err = run_cli(
        ["train", "--model", str(folder), "--data", str(data), "--quiet"], capsys
    )
    assert code == 2 and "pickle" in err and "--allow-pickle" in err


def test_config_file_with_flag_overrides_and_rerun_as_is(tiny_model, data, tmp_path, capsys):
    cfg = tmp_path / "in.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(tiny_model)},
                "data": {"path": str(data)},
                "train": {"max_steps": 5, "seq_len": 64, "batch_size": 2},
            }
        )
    )
    out = tmp_path / "run"
    code, _, _ = run_cli(
        [
            "train",
            "--config",
            str(cfg),
            "--max_steps",
            "3",
            "--lora_rank",
            "4",
            "--output",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    saved = RunConfig.load(out / "run.yaml")
    assert saved.train.max_steps == 3 and saved.lora.r == 4 and saved.train.seq_len == 64
    # run.yaml is fully resolved: re-running it as-is gives the same losses.
    again = tmp_path / "again.yaml"
    data_again = yaml.safe_load((out / "run.yaml").read_text())
    data_again["output"] = str(tmp_path / "run2")
    again.write_text(yaml.safe_dump(data_again))
    assert run_cli(["train", "--config", str(again), "--quiet"], capsys)[0] == 0

    def steps(d):
        return [
            json.loads(x)["loss"]
            for x in (d / "events.jsonl").read_text().splitlines()
            if '"step"' in x and json.loads(x)["type"] == "step"
        ]

    assert steps(out) == steps(tmp_path / "run2") and len(steps(out)) == 3


def test_unknown_setting_in_config_is_named(tmp_path, capsys):
    cfg = tmp_path / "in.yaml"
    cfg.write_text("train:\n  learning_rate: 0.1\n")
    code, _, err = run_cli(["train", "--config", str(cfg)], capsys)
    assert code == 2 and "train.learning_rate" in err


def test_exit_codes_through_a_real_process(tiny_model, data, tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio",
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "ok"),
            "--max-steps",
            "2",
            "--seq-len",
            "64",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "done at step 2" in ok.stderr and "Estimated memory" in ok.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio",
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(data),
            "--lora-rank",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "lora.r" in bad.stderr and "Traceback" not in bad.stderr


def test_demo_trains_offline_loss_falls_and_it_learns_to_end_its_answers(tmp_path):
    from studio.core import after_run, presets, step_timing

    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "train", "--demo", "--output", str(out), "--quiet",
         "--samples", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    evals = [e["eval_loss"] for e in events if e["type"] == "eval"]
    assert len(evals) >= 3 and evals[-1] < evals[0] * 0.8
    assert Path(events[-1]["adapter"]).joinpath("adapter_model.safetensors").is_file()
    # The preset code sized it, and the app's estimate counted the same steps.
    cfg = RunConfig.load(out / "run.yaml")
    assert cfg.train.epochs == presets.demo_settings()["train.epochs"]
    data = presets.measure(cfg)[0]
    assert events[0]["total_steps"] == step_timing.planned_steps(cfg, data)[0]
    # Ten held-out prompts, at most 48 tokens: the tuned model ends its turn, the base not.
    result = after_run.load_comparison(out)
    assert len(result.samples) == 10 and result.source == "validation"
    assert result.tuned_stops >= 8 and result.base_stops <= 2
    assert result.summary() in proc.stdout and "> What" in proc.stdout


def test_hub_id_offline_is_a_clear_error(data, capsys):
    code, _, err = run_cli(
        ["train", "--model", "some-org/some-model", "--data", str(data), "--quiet"], capsys
    )
    assert (
        code == 2
        and "model.path" in err
        and "some-org/some-model" in err
        and "Traceback" not in err
    )


def test_remote_code_is_refused_unless_asked(tiny_model, data, tmp_path, capsys):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model, folder)
    conf = json.loads((folder / "config.json").read_text())
    conf.update(
        model_type="my_custom_llama",
        auto_map={
            "AutoModelForCausalLM": "modeling_custom.CustomModel",
            "AutoConfig": "modeling_custom.CustomConfig",
        },
    )
    (folder / "config.json").write_text(json.dumps(conf))
    (folder / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    code, _, err = run_cli(
        [
            "train",
            "--model",
            str(folder),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "r"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "trust" in err and "remote code ran" not in err


def test_resume_refuses_settings_that_would_not_continue_the_same_run(
    tiny_model, data, tmp_path, capsys
):
    out = tmp_path / "run"
    base = ["train", "--model", str(tiny_model), "--data", str(data), "--output", str(out),
            "--seq-len", "64", "--quiet"]  # fmt: skip
    assert run_cli([*base, "--max-steps", "2"], capsys)[0] == 0
    resume = ["train", "--resume", "--output", str(out), "--quiet"]
    code, _, err = run_cli([*resume, "--batch-size", "3"], capsys)
    assert code == 2 and "train.batch_size is 4, not 3" in err and "start a new run" in err
    # How often it evaluates or saves may change; the run's own settings resume as they are.
    assert run_cli([*resume, "--eval-every", "1"], capsys)[0] == 0
