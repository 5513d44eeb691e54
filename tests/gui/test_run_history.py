"""Run history: every run of the project with its status, settings and losses; two or more
selected overlay their loss curves; a CLI run folder opens the same way."""

import json
import subprocess
import sys

import pytest

from studio.core import runs
from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.project import create_project
from tests.gui.conftest import dead_process


def make_run(folder, events, lr=1e-3, process=None):
    folder.mkdir(parents=True)
    RunConfig(
        model=ModelConfig(path="model", quant="4bit"),
        data=DataConfig(path="data.jsonl"),
        lora=LoraConfig(r=8),
        train=TrainConfig(lr=lr, max_steps=len(events)),
        output=str(folder),
    ).save(folder / "run.yaml")
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if process is not None:
        (folder / runs.PROCESS_FILE).write_text(json.dumps(process))
    return folder


def steps(n, start=1, loss0=3.0, t0=1000.0):
    return [
        {"type": "step", "step": s, "epoch": s / 10, "loss": loss0 / s, "lr": 1e-3,
         "grad_norm": 1.0, "tokens_per_s": 50.0, "elapsed_s": s, "eta_s": 0, "time": t0 + s}
        for s in range(start, start + n)
    ]  # fmt: skip


@pytest.fixture
def project(studio_home):
    project = create_project("History", studio_home / "projects")
    start = {"type": "start", "total_steps": 20, "time": 1000.0}
    done = {"type": "done", "step": 20, "adapter": "a", "final_loss": 0.15, "eval_loss": 0.4}
    evals = [
        {"type": "eval", "step": 10, "eval_loss": 0.5},
        {"type": "eval", "step": 20, "eval_loss": 0.4},
    ]
    make_run(project.runs_dir / "good", [start, *steps(20), *evals, done])
    oom = {"type": "error", "kind": "oom", "message": "out of memory at step 6"}
    make_run(project.runs_dir / "oom", [dict(start, time=2000.0), *steps(5, t0=2000.0), oom])
    # Resumed once from step 4: steps 5..8 were logged twice; the later ones count.
    resumed = [dict(start, time=3000.0), *steps(8, t0=3000.0)]
    resumed += [dict(start, start_step=4, time=3100.0), *steps(3, start=5, loss0=1.0)]
    make_run(project.runs_dir / "crashed", resumed, lr=5e-4, process=dead_process())
    return project


def cells(table, row):
    return [table.item(row, c).text() for c in range(table.columnCount())]


def test_history_lists_every_run_with_status_and_settings(window, qtbot, project):
    page = window.pages["Train"]
    window.state.set_project(project)
    page.tabs.setCurrentIndex(1)
    table = page.history.table
    qtbot.waitUntil(lambda: table.rowCount() == 3, timeout=10000)
    rows = {cells(table, r)[0]: cells(table, r) for r in range(3)}
    assert [cells(table, r)[0] for r in range(3)] == ["crashed", "oom", "good"]  # newest first
    assert rows["good"][1] == "completed" and rows["good"][5:] == ["0.1500", "0.4000"]
    assert rows["oom"][1] == "failed (out of memory)"
    assert rows["crashed"][1] == "failed (crashed)" and rows["crashed"][3] == "7 / 20"
    assert "r 8" in rows["good"][4] and "lr 0.001" in rows["good"][4]
    assert "QLoRA 4bit" in rows["good"][4] and "lr 0.0005" in rows["crashed"][4]
    # Opening the project showed its latest run on the monitor (replayed, ended).
    qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
    assert page.run_dir.name == "crashed" and page.run_state.status == "failed"
    assert page.plots.steps.steps().tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert page.plots.steps.column(1)[4] == pytest.approx(1.0 / 5)  # the resumed value
    assert not page.failure.isHidden() and not page.timer.isActive()


def test_selecting_runs_overlays_their_curves(window, qtbot, project):
    page = window.pages["Train"]
    window.state.set_project(project)
    history = page.history
    qtbot.waitUntil(lambda: history.table.rowCount() == 3, timeout=10000)
    history.select(["good", "crashed"])
    assert not history.open_button.isEnabled()
    qtbot.waitUntil(lambda: history.compare is not None and len(history.compare.names) == 2)
    assert history.compare.names == ["crashed", "good"]
    curves = history.compare.plot.getPlotItem().listDataItems()
    # good: train + eval; crashed: train only (no eval).
    assert len(curves) == 3
    lengths = sorted(len(c.getData()[0]) for c in curves)
    assert lengths == [2, 7, 20]
    legend = [label.text for _, label in history.compare.legend.items]
    assert legend == ["crashed", "good", "good (eval)"]
    history.refresh()  # the list is read again (a run ended): the selection stays
    qtbot.waitUntil(lambda: history._list_task is None, timeout=10000)
    assert [s.name for s in history.selected_states()] == ["crashed", "good"]


def test_a_cli_run_folder_opens_the_same_way(window, qtbot, project, tmp_path):
    cli = make_run(
        tmp_path / "elsewhere" / "cli-run",
        [
            {"type": "start", "total_steps": 4},
            *steps(4),
            {"type": "done", "step": 4, "adapter": ""},
        ],
    )
    page = window.pages["Train"]
    window.state.set_project(project)
    qtbot.waitUntil(lambda: page.history.table.rowCount() == 3, timeout=10000)
    page.history.add_folder(cli)
    qtbot.waitUntil(lambda: page.history.table.rowCount() == 4, timeout=10000)
    qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
    page.history.select(["cli-run"])
    assert page.history.open_button.isEnabled()
    page.history.open_button.click()
    qtbot.waitUntil(lambda: page.worker is None and page.run_dir == cli, timeout=10000)
    assert page.run_state.status == "completed" and page.plots.point_count() == 4
    assert page.status.text().startswith("Completed: 4 steps")
    assert page.rerun_button.isEnabled() and not page.resume_button.isEnabled()


def test_a_cli_run_still_going_is_followed(window, qtbot, project):
    from tests.gui.test_train_page import FAKE_TRAINER

    folder = make_run(project.runs_dir / "from-cli", [])
    # Started in a terminal: no pid file, the app only sees its events.
    proc = subprocess.Popen([sys.executable, "-c", FAKE_TRAINER, str(folder / "events.jsonl")])
    try:
        qtbot.waitUntil(lambda: len(runs.read_all_events(folder)) >= 5, timeout=20000)
        page = window.pages["Train"]
        page.open_run_folder(folder)
        qtbot.waitUntil(lambda: page.plots.point_count() >= 8, timeout=10000)
        assert page.worker is not None and not page.is_running()  # followed, not supervised
        assert "started outside the app" in page.status.text()
        proc.terminate()  # the fake trainer writes its `done` (stopped) event
        assert proc.wait(20) == 130
        qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
        assert page.run_state.status == "stopped" and not page.timer.isActive()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_let_go_workers_late_signals_do_not_reach_the_run_on_show(window, qtbot, project):
    page = window.pages["Train"]
    page.open_run_folder(project.runs_dir / "good")
    first = page.worker
    page.open_run_folder(project.runs_dir / "oom")
    current = page.worker
    assert first is not current and page.run_dir.name == "oom"
    # What the first worker had queued before it was let go arrives now: ignored.
    first.ended.emit(runs.RunState(folder=project.runs_dir / "good", status="completed"))
    first.log_read.emit("from the other run\n")
    assert page.worker is current and page.run_dir.name == "oom"
    assert "from the other run" not in page.console.toPlainText()
    qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
    assert page.run_state.status == "failed" and page.run_state.folder.name == "oom"
