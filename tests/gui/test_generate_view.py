"""The Data page's Generate dialog driving a real `studio data generate` child on a tiny
model: rows in the preview while the child still runs, a rejected row left out and an edited
one saved as edited, the saved file imported on the Data page (and readable by load_dataset),
Stop then Continue ending with every row once, and a pair picked by hand saved as a pair."""

import json
import os
from pathlib import Path

import pytest

from studio.core.data.formats import load_dataset
from studio.core.project import create_project

RUN_TIMEOUT = 240000
SHOTS = os.environ.get("STUDIO_SHOTS", "")
"""Where the views' screenshots go (the README's come from here); unset: none are written."""


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("base") / "m")


@pytest.fixture
def prompts(tmp_path):
    def write(n: int) -> Path:
        path = tmp_path / "prompts.jsonl"
        rows = [{"instruction": f"Tell me about the number {i}."} for i in range(n)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def dialog(qtbot, window, studio_home, base_model):
    project = create_project("Gen", studio_home / "projects")
    window.state.set_project(project)
    window.show_page("Data")
    dialog = window.pages["Data"].open_generate()
    dialog.picker.model_edit.setText(str(base_model))
    dialog.max_tokens.setValue(12)
    dialog.batch_size.setValue(1)  # one row at a time: they trickle into the preview
    yield dialog
    dialog.shutdown()  # a failed test leaves no process behind


def _mode(dialog, key: str) -> None:
    dialog.mode_box.setCurrentIndex(dialog.mode_box.findData(key))


def _run(qtbot, dialog, button) -> str:
    with qtbot.waitSignal(dialog.finished_run, timeout=RUN_TIMEOUT) as blocker:
        button.click()
    return blocker.args[0]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_rows_come_live_and_the_kept_ones_are_imported(qtbot, window, dialog, prompts):
    dialog.input_edit.setText(str(prompts(5)))
    _mode(dialog, "answer")
    command = dialog.command_view.toPlainText()
    assert (
        command.startswith("studio data generate answer --input ") and "--batch-size 1" in command
    )
    seen_while_running, stages = [], []

    def row_came():
        seen_while_running.append((len(dialog.preview.rows), dialog.job is not None))
        stages.append((dialog.stage_label.text(), dialog.progress.isVisible()))
        if len(dialog.preview.rows) == 3:
            _shoot(dialog, "generate-running.png")

    dialog.preview.changed.connect(row_came)
    assert _run(qtbot, dialog, dialog.generate_button) == "completed", dialog.message.text()
    # Each row reached the preview on its own, while the child was still writing the next.
    assert [n for n, running in seen_while_running if running] == [1, 2, 3, 4, 5]
    # The progress bar and "Writing rows: k of 5" (with an ETA once it is a second or more).
    assert all(shown for _, shown in stages) and "Writing rows: 1 of 5" in stages[1][0]
    assert dialog.stage_label.text() == "Done. 5 rows made." and not dialog.progress.isVisible()
    assert sorted(dialog.preview.rows) == [0, 1, 2, 3, 4]
    output = Path(dialog.output)
    assert output.parent == Path(window.state.project.folder) / "data" / "generated"
    assert len(_lines(output)) == 5

    preview = dialog.preview
    preview.select(1)
    preview.mark("rejected")
    preview.select(0)
    preview.edit_button.click()  # Edit: the texts become editable
    answer_box = [box for path, box in preview.editors if path[-1] == "content"][-1]
    assert not answer_box.isReadOnly()
    answer_box.setPlainText("Zero is the number before one.")
    preview.edit_button.click()  # Apply edit
    preview.select(2)
    preview.mark("accepted")
    assert "4 to save (1 accepted, 3 not reviewed) · 1 rejected" in dialog.counts_label.text()
    _shoot(dialog, "generate.png")

    page = window.pages["Data"]
    dialog.name_edit.setText("numbers answered")
    saved = dialog.add_to_project()
    assert Path(saved) == Path(window.state.project.folder) / "data" / "numbers-answered.jsonl"
    qtbot.waitUntil(lambda: page.state.dataset is not None, timeout=30000)
    assert page.state.dataset.path == saved and page.state.dataset.kept == 4
    ds = load_dataset(saved)
    assert ds.format == "messages" and ds.kept == 4 and ds.skipped == 0
    assert ds.records[0].messages[-1]["content"] == "Zero is the number before one."
    users = [r.messages[0]["content"] for r in ds.records]
    assert "Tell me about the number 1." not in users and len(users) == 4
    assert _lines(output)[0]["messages"][-1]["content"] != "Zero is the number before one."


def test_stop_then_continue_ends_with_every_row_once(qtbot, dialog, prompts):
    total = 16
    dialog.input_edit.setText(str(prompts(total)))
    _mode(dialog, "answer")
    dialog.max_tokens.setValue(24)
    dialog.preview.changed.connect(
        lambda: dialog.job is not None and len(dialog.preview.rows) == 1 and dialog.stop()
    )
    assert _run(qtbot, dialog, dialog.generate_button) == "stopped", dialog.message.text()
    stopped_at = len(dialog.preview.rows)
    assert 1 <= stopped_at < total and dialog.continue_button.isEnabled()
    assert "Continue picks up where it stopped" in dialog.message.text()
    assert len(_lines(dialog.output)) == stopped_at
    dialog.preview.select(0)
    dialog.preview.mark("rejected")  # a mark made before Continue survives it

    assert _run(qtbot, dialog, dialog.continue_button) == "completed", dialog.message.text()
    rows = _lines(dialog.output)
    assert sorted(dialog.preview.rows) == list(range(total)) and len(rows) == total
    assert len({r["meta"]["key"] for r in rows}) == total  # nothing written twice
    assert dialog.preview.rows[0].status == "rejected"
    ds = load_dataset(dialog.add_to_project())
    users = sorted(r.messages[0]["content"] for r in ds.records)
    assert users == sorted(f"Tell me about the number {i}." for i in range(1, total))


def test_two_answers_picked_by_hand_are_saved_as_pairs(qtbot, dialog, prompts):
    dialog.input_edit.setText(str(prompts(3)))
    _mode(dialog, "pairs")
    assert _run(qtbot, dialog, dialog.generate_button) == "completed", dialog.message.text()
    preview = dialog.preview
    assert all(row.candidate for row in preview.rows.values())
    preview.select(0)
    assert preview.pick_buttons[1].isVisible() and not preview.accept_button.isVisible()
    preview.pick_buttons[1].click()  # B is better
    preview.select(2)
    preview.pick_buttons[0].click()
    assert "1 pairs with no better answer picked" in dialog.counts_label.text()
    _shoot(dialog, "generate-pairs.png")
    records = _lines(dialog.output)
    ds = load_dataset(dialog.add_to_project())
    assert ds.format == "pairs" and ds.kept == 2
    first, last = ds.records
    assert (first.chosen, first.rejected) == tuple(reversed(records[0]["answers"]))
    assert (last.chosen, last.rejected) == tuple(records[2]["answers"])


def _shoot(widget, name: str) -> None:
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()  # lay out what was just shown, as the screen would
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(Path(SHOTS) / name))
