"""The Train page: real tiny trainings driven through the page (plot points, Stop, Resume,
a SIGKILL), the live buffers, tailing events.jsonl, re-attaching and closing during a run."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from studio.core import runs
from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.project import create_project
from studio.core.runs import STEP_COLUMNS
from studio.gui.plots import SeriesBuffer, TrainingPlots, ema
from studio.gui.run_worker import group_events
from tests.gui.conftest import dead_process
from tests.test_train import write_data


def tiny_config(model, data, **train) -> RunConfig:
    t = dict(max_steps=40, batch_size=2, seq_len=64, lr=1e-3, seed=3, save_every=2)
    t.update(train)
    return RunConfig(
        model=ModelConfig(path=str(model)),
        lora=LoraConfig(r=4, lora_alpha=8),
        data=DataConfig(path=str(data), val_split=0.2),
        train=TrainConfig(**t),
    )


def step_events(steps, epoch_per_step=0.1):
    return [
        {"type": "step", "step": s, "epoch": s * epoch_per_step, "loss": 3.0 - s * 1e-5,
         "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0, "elapsed_s": s, "eta_s": 1.0}
        for s in steps
    ]  # fmt: skip


@pytest.fixture
def project(studio_home):
    return create_project("Runs", studio_home / "projects")


@pytest.fixture
def page(window, qtbot):
    """The Train page; a run a failed test left going is killed before the window closes."""
    page = window.pages["Train"]
    yield page
    if page.is_running():
        page.run.kill()
        qtbot.waitUntil(lambda: page.worker is None, timeout=30000)


def drawn_points(page) -> int:
    x = page.plots.raw_curve.getData()[0]
    return 0 if x is None else len(x)


def wait_ended(qtbot, page, timeout=90000):
    qtbot.waitUntil(lambda: page.worker is None, timeout=timeout)
    return page.run_state


# --- buffers, tailing, status: no training --------------------------------------------------


def test_buffer_grows_and_later_values_replace_earlier(qtbot):
    buf = SeriesBuffer(1, capacity=4)
    buf.extend(np.arange(1.0, 11.0), np.arange(10.0).reshape(-1, 1))
    assert len(buf) == 10 and len(buf.x) == 16
    buf.extend(np.array([6.0, 7.0]), np.array([[60.0], [70.0]]))  # a resume re-logs step 6
    assert buf.steps().tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert buf.column(0).tolist() == [0, 1, 2, 3, 4, 60, 70]


def test_plots_take_100k_points_and_a_resume(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    block = np.array([[e[k] for k in STEP_COLUMNS] for e in step_events(range(1, 100_001))])
    plots.add_steps(block)
    plots.add_checkpoint(50_000)
    plots.add_eval(50_000, 2.5)
    plots.redraw()
    x, y = plots.raw_curve.getData()
    assert plots.point_count() == 100_000 and x[-1] == 100_000
    assert plots.loss_plot.getViewBox().state["autoRange"] is not None
    # Epoch boundaries every 10 steps are too many to draw: no line per epoch.
    assert len(plots.epoch_steps) == 10_000 and plots.epoch_lines == []
    # A resume from the checkpoint at 50,000: what came after it is replaced.
    plots.start_at(50_000)
    plots.add_steps(block[50_000:50_010] * [1, 1, 0, 1, 1, 1, 1, 1])  # loss 0 now
    plots.redraw()
    x, y = plots.raw_curve.getData()
    assert len(x) == 50_010 and x[-1] == 50_010 and y[-1] == 0.0
    assert plots.evals.steps().tolist() == [50_000.0] and plots.checkpoints == [50_000]
    smooth = plots.smooth_curve.getData()[1]
    assert smooth[0] == pytest.approx(block[0, 2])  # debiased: starts at the first loss
    m, expected = 0.0, []
    for i, loss in enumerate(block[:300, 2]):  # TensorBoard's debiased EMA, step by step
        m = 0.9 * m + 0.1 * loss
        expected.append(m / (1 - 0.9 ** (i + 1)))
    assert smooth[:300] == pytest.approx(expected) and ema(block[:300, 2]) == pytest.approx(
        expected
    )


def test_epoch_lines_and_grouping(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    items = group_events(
        [{"type": "start", "total_steps": 30}, *step_events(range(1, 31), epoch_per_step=0.1)]
    )
    assert isinstance(items[0], dict) and items[1].shape == (30, len(STEP_COLUMNS))
    plots.add_steps(items[1])
    plots.redraw()
    assert [line.value() for line in plots.epoch_lines] == [10, 20, 30]
    assert plots.epoch_numbers == [1, 2, 3]


def test_tail_waits_for_a_whole_line(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = runs.FileTail(path)
    assert tail.read_lines() == []
    line = json.dumps(step_events([1])[0])
    path.write_text(line[:20])
    assert runs.parse_lines(tail.read_lines()) == []
    with open(path, "a") as f:
        f.write(line[20:] + "\n" + '{"type": "eval", "step"')
    assert [e["type"] for e in runs.parse_lines(tail.read_lines())] == ["step"]
    path.write_text('{"type": "start", "total_steps": 5}\n')  # replaced: read from the start
    assert [e["type"] for e in runs.parse_lines(tail.read_lines())] == ["start"]


def _run_folder(tmp_path, events, process=None):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if process is not None:
        (folder / runs.PROCESS_FILE).write_text(json.dumps(process))
    return folder


def test_a_run_that_died_without_a_word_is_failed_never_done(tmp_path):
    start = {"type": "start", "total_steps": 10}
    folder = _run_folder(tmp_path, [start, *step_events([1, 2])], dead_process())
    state = runs.run_state(folder)
    assert (state.status, state.kind, state.step) == ("failed", "crashed", 2)
    runs.record_exit(folder, -signal.SIGKILL, stop_requested=False)
    state = runs.run_state(folder)
    assert state.kind == "killed" and "SIGKILL" in state.message
    headline, advice = runs.failure_advice(state)
    assert "killed" in headline and any("QLoRA" in a for a in advice)
    assert runs.describe_exit(2)[0] == "input" and runs.describe_exit(None)[0] == "crashed"
    assert any("gradient checkpointing" in a for a in advice)


def test_oom_and_done_events_decide_the_status(tmp_path):
    oom = {"type": "error", "kind": "oom", "message": "out of memory at step 3"}
    state = runs.run_state(_run_folder(tmp_path, [{"type": "start", "total_steps": 9}, oom]))
    assert (state.status, state.kind) == ("failed", "oom")
    assert "smaller batch" in " ".join(runs.failure_advice(state)[1])
    done = {"type": "done", "step": 2, "adapter": "a", "status": "stopped", "final_loss": 1.5}
    other = tmp_path / "other"
    other.mkdir()
    state = runs.run_state(_run_folder(other, [{"type": "start", "total_steps": 9}, done]))
    assert (state.status, state.final_loss) == ("stopped", 1.5)


def test_set_aside_newer_checkpoints(tmp_path):
    for step in (2, 4, 6):
        d = tmp_path / "checkpoints" / f"step-{step:06d}"
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"step": step}))
    moved = runs.set_aside_after(tmp_path, 2)
    assert runs.checkpoint_steps(tmp_path) == [2]
    assert sorted(p.name for p in moved) == ["step-000004", "step-000006"]
    assert all((tmp_path / runs.SET_ASIDE / p.name).is_dir() for p in moved)


# --- real tiny trainings through the page -----------------------------------------------------


def start_tiny_run(window, page, tiny_model, tmp_path, project, name, max_steps):
    """A real tiny training started from the Train page of the project; returns its folder."""
    data = write_data(tmp_path / "data.jsonl")
    window.state.set_project(project)
    window.show_page("Train")
    run_dir = project.runs_dir / name
    page.start_run(tiny_config(tiny_model, data, max_steps=max_steps), run_dir)
    return run_dir


@pytest.mark.slow
def test_train_stop_and_resume_through_the_page(window, page, qtbot, tiny_model, tmp_path, project):
    run_dir = start_tiny_run(window, page, tiny_model, tmp_path, project, "first", 200)
    assert page.is_running() and page.timer.isActive()
    qtbot.waitUntil(lambda: page.plots.point_count() >= 3, timeout=90000)
    qtbot.waitUntil(lambda: drawn_points(page) >= 3, timeout=5000)
    assert page.progress.maximum() == 200 and "loss" in page.progress_text.text()
    page.stop_button.click()
    state = wait_ended(qtbot, page)
    assert state.status == "stopped" and state.returncode == 130
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    stopped_at = state.checkpoints[-1]
    assert stopped_at == state.step >= 3 and "Resume continues from step" in page.status.text()
    assert page.resume_button.isEnabled() and page.checkpoint_box.currentData() == stopped_at
    assert not page.failure.isVisible() and not page.timer.isActive()

    page.resume_button.click()
    assert page.is_running()
    qtbot.waitUntil(lambda: page.run_state.step >= stopped_at + 3, timeout=90000)
    page.stop_button.click()
    state = wait_ended(qtbot, page)
    assert state.status == "stopped"
    events = runs.read_all_events(run_dir)
    starts = [i for i, e in enumerate(events) if e["type"] == "start"]
    assert len(starts) == 2 and events[starts[1]]["start_step"] == stopped_at
    first_resumed = next(e for e in events[starts[1] :] if e["type"] == "step")
    assert first_resumed["step"] == stopped_at + 1  # the step numbers continue
    x = page.plots.steps.steps()
    assert x.tolist() == list(range(1, state.step + 1))  # one point a step, no repeat
    assert "events.jsonl" not in page.status.text()


def test_stop_through_the_stop_file_as_on_windows(
    window, page, qtbot, tiny_model, tmp_path, project, monkeypatch
):
    # Windows has no SIGTERM to give a console-less child: Stop writes RUN/stop.request.
    monkeypatch.setattr("studio.gui.run_launcher.STOP_BY_FILE", True)
    sent = []
    monkeypatch.setattr(runs, "signal_process", lambda pid, sig: sent.append(sig))
    run_dir = start_tiny_run(window, page, tiny_model, tmp_path, project, "by-file", 200)
    qtbot.waitUntil(lambda: page.plots.point_count() >= 2, timeout=90000)
    page.stop_button.click()
    state = wait_ended(qtbot, page)
    assert sent == []  # no signal was needed
    assert state.status == "stopped" and state.returncode == 130
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert not (run_dir / runs.STOP_FILE).exists()  # the run clears the request


def test_a_stale_stop_request_is_not_for_a_later_process(tmp_path):
    import time

    runs.request_stop(tmp_path)
    assert runs.stop_requested(tmp_path, since=0)
    assert not runs.stop_requested(tmp_path, since=time.time() + 60)
    runs.clear_stop(tmp_path)
    assert not runs.stop_requested(tmp_path, since=0)


@pytest.mark.slow
def test_a_killed_run_shows_failed_with_its_log(window, page, qtbot, tiny_model, tmp_path, project):
    run_dir = start_tiny_run(window, page, tiny_model, tmp_path, project, "doomed", 500)
    qtbot.waitUntil(lambda: page.run_state.step >= 4, timeout=90000)
    qtbot.waitUntil(lambda: bool(runs.checkpoint_steps(run_dir)), timeout=10000)
    os.kill(page.run.pid, signal.SIGKILL)
    state = wait_ended(qtbot, page)
    assert (state.status, state.kind, state.returncode) == ("failed", "killed", -9)
    assert page.failure.isVisible() and "killed" in page.failure.title.text()
    assert "QLoRA" in page.failure.text.text() and "Resume continues" in page.failure.text.text()
    assert "training:" in page.failure.log.toPlainText()  # the last lines of train.log
    assert page.status.text().startswith("Failed") and "Completed" not in page.status.text()
    assert page.resume_button.isEnabled()  # its last checkpoint stays resumable
    assert runs.run_state(run_dir).status == "failed"
    # The window keeps working.
    window.show_page("Data")
    assert window.current_page() == "Data" and window.isVisible()
    window.show_page("Train")
    page.tabs.setCurrentIndex(1)
    table = page.history.table
    qtbot.waitUntil(lambda: table.rowCount() == 1 and "failed" in table.item(0, 1).text())
    assert table.item(0, 1).text() == "failed (killed)" and table.item(0, 0).text() == "doomed"


# --- re-attach, close during a run, notification ------------------------------------------------

FAKE_TRAINER = r"""
import json, signal, sys, time
path = sys.argv[1]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
def put(ev):
    with open(path, "a") as f:
        f.write(json.dumps(ev) + "\n")
put({"type": "start", "total_steps": 100000, "start_step": 0})
for s in range(1, 100000):
    if stop:
        put({"type": "done", "step": s - 1, "adapter": "", "status": "stopped"})
        sys.exit(130)
    put({"type": "step", "step": s, "epoch": s / 100, "loss": 2.0, "lr": 1e-3, "grad_norm": 1.0,
         "tokens_per_s": 10.0, "elapsed_s": s, "eta_s": 9.0})
    time.sleep(0.05)
"""


def _fake_run(project, name):
    """A training-like process writing events, started as if by an earlier app session."""
    folder = project.runs_dir / name
    folder.mkdir(parents=True)
    RunConfig(model=ModelConfig(path="m"), data=DataConfig(path="d.jsonl")).save(
        folder / "run.yaml"
    )
    command = [sys.executable, "-c", FAKE_TRAINER, str(folder / "events.jsonl")]
    proc = subprocess.Popen(command, start_new_session=True)
    runs.write_process(folder, proc.pid, command)
    return folder, proc


def test_reopening_the_project_reattaches_and_close_asks(window, qtbot, project, monkeypatch):
    folder, proc = _fake_run(project, "still-going")
    try:
        qtbot.waitUntil(lambda: len(runs.read_all_events(folder)) >= 10, timeout=20000)
        page = window.pages["Train"]
        window.state.set_project(project)  # as when the app reopens the project
        assert page.is_running() and page.run_dir == folder and page.run.process is None
        qtbot.waitUntil(lambda: page.plots.point_count() >= 12, timeout=10000)
        assert page.plots.steps.steps()[0] == 1  # the whole curve, replayed
        assert page.stop_button.isEnabled()
        # Closing asks; "leave" keeps it training.
        monkeypatch.setattr(window, "ask_about_running_run", lambda: "cancel")
        window.close()
        assert window.isVisible() and page.is_running()
        monkeypatch.setattr(window, "ask_about_running_run", lambda: "leave")
        window.close()
        assert not page.is_running() and not page.timer.isActive()
        assert proc.poll() is None and runs.process_alive(folder) == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_close_can_stop_the_run_and_the_end_is_notified(qtbot, project, monkeypatch):
    from studio.gui.main_window import MainWindow

    folder, proc = _fake_run(project, "to-stop")
    window = MainWindow(probe=False)
    qtbot.addWidget(window)
    window.show()
    try:
        page = window.pages["Train"]
        window.state.set_project(project)
        assert page.is_running()
        qtbot.waitUntil(lambda: page.plots.point_count() >= 2, timeout=10000)
        told = []
        monkeypatch.setattr(window, "isActiveWindow", lambda: False)
        monkeypatch.setattr(
            "studio.gui.notify.QApplication.alert", lambda w, ms=0: told.append("alert")
        )
        monkeypatch.setattr(
            "studio.gui.notify.QSystemTrayIcon.isSystemTrayAvailable", lambda: False
        )
        monkeypatch.setattr(window, "ask_about_running_run", lambda: "stop")
        window.close()
        assert proc.wait(20) == 130  # SIGTERM: it stopped on its own
        assert told == ["alert"] and "Training stopped" in window.statusBar().currentMessage()
        assert runs.run_state(folder).status == "stopped"
        assert not page.timer.isActive() and page.worker is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rerun_dialog_prefills_and_writes_a_new_run(window, qtbot, project, tmp_path):
    from studio.gui.run_settings import RunSettingsDialog

    cfg = tiny_config("model-folder", tmp_path / "d.jsonl")
    dialog = RunSettingsDialog(cfg, project.runs_dir, "again", "Re-run")
    qtbot.addWidget(dialog)
    assert dialog.form.widgets["train.max_steps"].value() == 40
    dialog.form.widgets["train.lr"].setText("5e-4")
    built = dialog.build()
    assert built.train.lr == 5e-4 and built.model.path == "model-folder"
    dialog.form.widgets["train.lr"].setText("-1")
    dialog.accept()
    assert "train.lr" in dialog.error.text() and dialog.cfg is None
    (project.runs_dir / "again").mkdir(parents=True)
    dialog.form.widgets["train.lr"].setText("5e-4")
    dialog.accept()
    assert "exists already" in dialog.error.text()


def test_qt_calls_cannot_wear_out_none(window):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on each void Qt call; live plots
    make thousands a minute and the interpreter then aborts ("none_dealloc"). pyproject.toml
    excludes that release; this fails if a build with the bug is installed."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel()
    before = sys.getrefcount(None)
    for _ in range(20000):
        label.setText("x")
    assert sys.getrefcount(None) >= before - 100


def test_a_run_that_cannot_start_is_explained_not_raised(
    window, page, tiny_model, tmp_path, monkeypatch
):
    told = []
    monkeypatch.setattr(page, "tell", lambda title, text: told.append((title, text)))
    taken = tmp_path / "taken"
    taken.mkdir()
    page.start_run(tiny_config(tiny_model, tmp_path / "d.jsonl", max_steps=1), taken)
    assert told and told[0][0] == "Cannot start the run" and "taken" in told[0][1]
    assert not page.is_running()
    page.run_dir = tmp_path / "no-such-run"  # re-run of a run whose run.yaml is gone
    page.rerun()
    assert told[-1][0] == "Cannot re-run"


def test_the_page_shows_the_processes_and_the_latest_parameter_groups(page, tmp_path):
    page.run_state = runs.RunState(folder=tmp_path)
    items = [
        {"type": "log", "message": "2 training processes (gloo); each step takes 2 rows a process"},
        {"type": "log", "message": "parameter groups: tier 2: lr 2.00e-04, 14 modules"},
        {"type": "log", "message": "an unrelated line"},
        {
            "type": "log",
            "message": "parameter groups at step 20 (sensitivity): tier 1: lr 4.00e-04",
        },
    ]
    page._events_read(items)
    text = page.details.text().splitlines()
    assert text == [items[0]["message"], items[3]["message"]]
    assert not page.details.isHidden()
