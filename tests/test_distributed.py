"""Several training processes on this CPU (torchrun, gloo): the same training as one process
on the same global batch, rank 0 alone writing, compression, a killed rank, and the GPU
count check of `--gpus` / `ds_train`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.errors import ConfigError
from studio.core.events import read_events
from studio.core.train import run_training, train
from tests.test_train import write_data

pytestmark = pytest.mark.slow

ENV = dict(os.environ, OMP_NUM_THREADS="1")  # two ranks on two cores


def config(model, data, out, **train) -> RunConfig:
    t = dict(max_steps=12, batch_size=2, grad_accum=2, seq_len=64, lr=2e-3, seed=5)
    t.update(train)
    return RunConfig(
        model=ModelConfig(path=str(model)),
        lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0),  # no dropout: comparable runs
        data=DataConfig(path=str(data), val_split=0.2),
        train=TrainConfig(**t),
        output=str(out),
    )


def studio_train(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "studio", "train", *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def steps(run: Path) -> dict[int, dict]:
    out = {}
    for e in read_events(run / "events.jsonl"):
        if e.type == "step":
            out[e.step] = e
    return out


def test_two_processes_train_like_one_on_the_same_global_batch(tiny_model, tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    one = config(tiny_model, data, tmp_path / "one", batch_size=4)
    assert run_training(one).type == "done"

    results = {}
    for kind in ("none", "int4"):
        cfg = config(tiny_model, data, tmp_path / kind, processes=2, grad_compression=kind)
        cfg.save(tmp_path / f"{kind}.yaml")
        out = studio_train("--config", str(tmp_path / f"{kind}.yaml"), "--quiet")
        assert out.returncode == 0, out.stderr[-3000:]
        results[kind] = run = tmp_path / kind
        events = read_events(run / "events.jsonl")
        kinds = [e.type for e in events]
        # rank 0 alone writes: one start, each step once, one done, one adapter
        assert kinds.count("start") == 1 and kinds.count("done") == 1
        assert [e.step for e in events if e.type == "step"] == list(range(1, 13))
        assert (run / "adapter" / "adapter_model.safetensors").is_file()
        assert not (run / ".ranks").exists()
        assert any("2 training processes (gloo)" in e.message for e in events if e.type == "log")

    want, got = steps(tmp_path / "one"), steps(results["none"])
    for s in range(1, 13):
        assert got[s].loss == pytest.approx(want[s].loss, rel=2e-4), s
    evals = [[e.eval_loss for e in read_events(r / "events.jsonl") if e.type == "eval"]
             for r in (tmp_path / "one", results["none"])]  # fmt: skip
    assert evals[1] == pytest.approx(evals[0], rel=2e-4)
    # fp32 sends the whole gradient; int4 after its warm-up about an eighth of it
    plain = got[12].metrics
    assert plain["comm_bytes"] == plain["comm_bytes_fp32"] > 0
    int4 = steps(results["int4"])
    assert int4[1].metrics["comm_bytes"] == int4[1].metrics["comm_bytes_fp32"]  # warm-up
    assert int4[12].metrics["comm_bytes"] < 0.15 * int4[12].metrics["comm_bytes_fp32"]
    assert int4[12].loss == pytest.approx(got[12].loss, rel=0.02)
    assert int4[12].loss != got[12].loss  # it was compressed


@pytest.mark.parametrize("mode", ["dpo", "distill"])
def test_preference_and_distillation_train_like_one_process(tiny_model, tmp_path, mode):
    """The objective's own figures (rewards, KL) travel with several processes too, summed over
    the ranks like the loss."""
    import dataclasses

    from studio.core.config import DistillConfig
    from tests.test_preference_train import write_pairs

    data = (write_pairs if mode == "dpo" else write_data)(tmp_path / "data.jsonl")
    extra = {"distill": DistillConfig(teacher=str(tiny_model))} if mode == "distill" else {}

    def cfg(out, **t):
        base = config(tiny_model, data, tmp_path / out, max_steps=6, **t)
        return dataclasses.replace(base, train=dataclasses.replace(base.train, mode=mode), **extra)

    assert run_training(cfg("one", batch_size=4)).type == "done"
    two = cfg("two", processes=2)
    two.save(tmp_path / "two.yaml")
    out = studio_train("--config", str(tmp_path / "two.yaml"), "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    want, got = steps(tmp_path / "one"), steps(tmp_path / "two")
    key = "rewards/margins" if mode == "dpo" else "kl"
    for s in range(1, 7):
        assert got[s].loss == pytest.approx(want[s].loss, rel=2e-4), s
        assert got[s].metrics[key] == pytest.approx(want[s].metrics[key], rel=1e-3, abs=1e-6), s
    assert "comm_bytes" in got[6].metrics


def rank_pid(run: Path, rank: int) -> int | None:
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(run) in " ".join(p.info["cmdline"] or []) and p.environ().get("RANK") == str(
                rank
            ):
                return p.pid
        except (psutil.Error, OSError):
            continue
    return None


def test_a_killed_rank_ends_the_run_with_its_error_and_the_run_resumes(tiny_model, tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    run = tmp_path / "run"
    config(tiny_model, data, run, processes=2, max_steps=120, save_every=2).save(
        tmp_path / "run.yaml"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "train", "--config", str(tmp_path / "run.yaml"), "--quiet"],
        env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 180
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if any(e.type == "checkpoint" for e in read_events(run / "events.jsonl")):
            pid = rank_pid(run, 1)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert killed, "the run ended before a rank could be killed"
    assert proc.returncode == 1, err[-2000:]
    last = read_events(run / "events.jsonl")[-1]
    assert last.type == "error"
    assert "rank 1 was killed by SIGKILL" in last.message and "--resume" in last.message
    assert "rank 1 was killed by SIGKILL" in err  # and said on the terminal
    done = max(steps(run))
    assert done < 120

    # The world size is part of the run: another one is refused, by the CLI and the core.
    other = studio_train("--output", str(run), "--resume", "--nproc", "1")
    assert other.returncode == 2 and "train.processes" in other.stderr
    one = RunConfig.load(run / "run.yaml")
    one.train.processes = 1
    with pytest.raises(ConfigError, match="written by 2 training process"):
        next(iter(train(one, resume=True)))

    # Resumed through the Python API, which launches the ranks the same way.
    from studio import LoraConfig as ApiLora
    from studio import Trainer

    saved = RunConfig.load(run / "run.yaml").train
    options = {k: getattr(saved, k) for k in ("max_steps", "batch_size", "grad_accum", "seq_len",
                                              "lr", "seed", "save_every", "processes")}  # fmt: skip
    result = Trainer(
        str(tiny_model), ApiLora(r=4, lora_alpha=8, lora_dropout=0.0), output=str(run),
        val_split=0.2, **options,
    ).train(str(data), resume=True)  # fmt: skip
    assert result.status == "completed" and result.adapter_path == run / "adapter"
    assert len(result.metrics["losses"]) == 120
    assert sorted(steps(run)) == list(range(1, 121))
    assert read_events(run / "events.jsonl")[-1].type == "done"


def test_asking_for_more_gpus_than_there_are_says_so_in_one_line(tiny_model, tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    out = subprocess.run(
        ["ds_train", "--model", str(tiny_model), "--data", str(data), "--lora_rank", "16",
         "--gpus", "4", "--output", str(tmp_path / "r")],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert "--gpus 4: this machine has no CUDA GPUs" in lines[0]
    assert "--nproc 2" in lines[0]  # what it can do instead
    assert not (tmp_path / "r").exists()


def test_the_gpu_check_suggests_the_count_there_is():
    from studio.core.launch import check_gpus

    check_gpus(2, 2)  # enough: no error
    with pytest.raises(ConfigError, match="has 2 CUDA GPUs; use --gpus 2"):
        check_gpus(4, 2)
    with pytest.raises(ConfigError, match="has 1 CUDA GPU; use --gpus 1"):
        check_gpus(4, 1)


def test_root_cause_prefers_a_signal_death_over_the_survivors_errors(tmp_path):
    from studio.core.launch import root_cause

    (tmp_path / "rank-0.json").write_text(
        json.dumps({"message": "training failed at step 9: Connection reset by peer"})
    )
    output = "Failures:\n[1]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 10)\n" \
             "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n" \
             "  exitcode  : -9 (pid: 11)\n"  # fmt: skip
    cause = root_cause(tmp_path, output)
    assert cause.rank == 1 and "SIGKILL" in cause.text
    cause = root_cause(tmp_path, "exitcode : 1")
    assert cause.rank == 0 and "Connection reset" in cause.text


def test_bad_input_with_two_processes_is_exit_2_and_leaves_no_run(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"messages": []}\n')
    out = studio_train("--model", str(tiny_model), "--data", str(empty), "--nproc", "2",
                       "--output", str(tmp_path / "r"), "--quiet")  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: data.path:" in out.stderr and "has no valid record" in out.stderr
    assert "rank 1" not in out.stderr  # one account of the problem, not one per rank
    assert not (tmp_path / "r").exists()
