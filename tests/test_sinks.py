"""Optional metric sinks: TensorBoard files that TensorBoard's own reader finds the run in, and
a clear error when the package is missing. events.jsonl stays the source of truth."""

import sys

import pytest

from studio.cli import main
from studio.core.errors import ConfigError
from studio.core.events import Eval, EventLog, Started, Step, read_events
from studio.core.sinks import Sink, TensorBoardSink, open_sinks
from studio.core.train import run_training
from tests.test_train import config, write_data


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.jsonl", n=12)


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)], as TensorBoard itself reads the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The same figures from events.jsonl, under the TensorBoard names."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in read_events(run_dir / "events.jsonl"):
        if e.type == "step":
            figures = {"loss": e.loss, "lr": e.lr, "grad_norm": e.grad_norm,
                       "tokens_per_s": e.tokens_per_s, "epoch": e.epoch, **e.metrics}  # fmt: skip
            prefix = "train"
        elif e.type == "eval":
            figures, prefix = {"loss": e.eval_loss, **e.metrics}, "eval"
        else:
            continue
        for key, value in figures.items():
            out.setdefault(f"{prefix}/{key}", []).append((e.step, value))
    return out


def assert_same(got, want):
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        # TensorBoard keeps float32.
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_a_training_run_is_readable_by_tensorboards_own_reader(tiny_model, data, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    last = run_training(config(tiny_model, data, run, max_steps=4, eval_every=2, tensorboard=True))
    assert last.type == "done"
    got = read_scalars(run / "tensorboard")
    want = expected_scalars(run)
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/loss"} <= set(want)
    assert [s for s, _ in want["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in want["eval/loss"]] == [2, 4]
    assert_same(got, want)


def test_preference_figures_keep_their_slashes_under_train(tmp_path):
    pytest.importorskip("tensorboard")
    sink = TensorBoardSink(tmp_path)
    sink.write(Started(total_steps=1))
    sink.write(Step(step=1, epoch=0.5, loss=0.7, lr=1e-4, grad_norm=float("inf"),
                    tokens_per_s=10.0, elapsed_s=1.0, eta_s=1.0,
                    metrics={"rewards/margins": 0.25}))  # fmt: skip
    sink.write(Eval(step=1, eval_loss=0.6, metrics={"rewards/accuracies": 0.5}))
    sink.close()
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/rewards/margins"] == [(1, 0.25)]
    assert got["eval/rewards/accuracies"] == [(1, 0.5)]
    # An fp16-skipped step's infinite norm is drawn as such, not dropped or made up.
    assert got["train/grad_norm"] == [(1, float("inf"))]


def test_a_resumed_run_replaces_the_killed_runs_points_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")

    def steps(sink, first, last, loss):
        for step in range(first, last + 1):
            sink.write(Step(step=step, epoch=0.0, loss=loss, lr=1e-4, grad_norm=1.0,
                            tokens_per_s=1.0, elapsed_s=1.0, eta_s=1.0))  # fmt: skip

    killed = TensorBoardSink(tmp_path)
    killed.write(Started(total_steps=5))
    steps(killed, 1, 4, loss=1.0)  # killed after step 4, its last checkpoint at step 2
    killed.close()
    resumed = TensorBoardSink(tmp_path)
    resumed.write(Started(total_steps=5, start_step=2))
    steps(resumed, 3, 5, loss=2.0)
    resumed.close()
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]


def test_no_sink_but_events_jsonl_unless_asked(tiny_model, data, tmp_path):
    assert open_sinks(config(tiny_model, data, tmp_path / "r"), tmp_path / "r") == []
    log = EventLog(tmp_path / "events.jsonl")
    assert isinstance(log, Sink)  # the run's own log is one
    log.close()
    pytest.importorskip("tensorboard")
    sinks = open_sinks(config(tiny_model, data, tmp_path / "r", tensorboard=True), tmp_path / "r")
    assert [type(s) for s in sinks] == [TensorBoardSink] and isinstance(sinks[0], Sink)
    assert not (tmp_path / "r").exists()  # nothing is written before the first event


@pytest.fixture
def no_tensorboard(monkeypatch):
    # None in sys.modules makes the import fail as it does without the package installed.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)


def test_tensorboard_without_the_package_is_a_clear_error_and_leaves_no_folder(
    tiny_model, data, tmp_path, no_tensorboard
):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="pip install tensorboard") as err:
        run_training(config(tiny_model, data, run, max_steps=2, tensorboard=True))
    assert err.value.field == "train.tensorboard"
    assert not run.exists()  # the run never started: nothing in the history


def test_the_flag_without_the_package_exits_2(tiny_model, data, tmp_path, no_tensorboard, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", str(tiny_model), "--data", str(data), "--quiet",
                 "--output", str(run), "--max-steps", "2", "--tensorboard"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pip install tensorboard" in err and "Traceback" not in err
    assert not run.exists()
