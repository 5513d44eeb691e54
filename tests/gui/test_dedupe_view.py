"""The Data page's clean-up dialog on the real core (studio.core.data.clean): planted exact and
near copies shown as groups with their lines, kind and likeness, a length filter in plain
words, and a cleaned copy (a new file, the original untouched) imported on the Data page."""

import json
import os
from pathlib import Path

import pytest

from studio.core.data.formats import load_dataset
from studio.core.project import create_project

SHOTS = os.environ.get("STUDIO_SHOTS", "")
"""Where the views' screenshots go (the README's come from here); unset: none are written."""
TOPICS = [
    "how bees turn nectar into honey inside the hive over many warm summer days",
    "why the moon shows phases as it travels around our planet each month",
    "what makes bread rise when yeast feeds on sugar in a kneaded dough",
    "how glaciers carve deep valleys while sliding slowly down from mountain peaks",
    "why copper wires carry electric current better than rubber or dry wood",
    "how migrating birds find their way south using stars and magnetic fields",
    "what happens inside a volcano before molten rock bursts through the crust",
    "why ocean tides rise and fall twice a day along most coastlines",
    "how a violin string vibrates to produce a clear and steady musical note",
    "why leaves change colour from green to red and gold every autumn",
]


def _row(topic: str) -> dict:
    return {
        "instruction": f"Explain {topic.split(' ', 1)[1]}.",
        "input": "",
        "output": f"Here is a short explanation of {topic}, told simply for a curious reader "
        "who wants to learn. We start from the basic idea, look at one example from daily "
        f"life, and end with a small fact about {topic} that is easy to remember.",
    }


@pytest.fixture
def data_file(tmp_path):
    rows = [_row(t) for t in TOPICS]  # lines 1-10, all different
    copy = dict(rows[0])
    copy["output"] = "  " + copy["output"].upper().replace(" ", "   ")  # line 11: exact copy
    near = dict(rows[4])
    near["output"] = near["output"].replace("simply", "plainly")  # line 12: a near copy
    short = {"instruction": "Say yes.", "input": "", "output": "Yes."}  # line 13: too short
    rows += [copy, near, short]
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def page(qtbot, window, studio_home, data_file):
    window.state.set_project(create_project("Clean", studio_home / "projects"))
    page = window.pages["Data"]
    page.import_file(str(data_file))
    qtbot.waitUntil(lambda: window.state.dataset is not None, timeout=30000)
    return page


def _find(qtbot, dialog) -> None:
    with qtbot.waitSignal(dialog.found, timeout=60000):
        dialog.find_button.click()
    assert dialog.report is not None, dialog.summary.text()


def _save(qtbot, page, dialog) -> str:
    with qtbot.waitSignal(dialog.saved, timeout=30000) as blocker:
        dialog.save_button.click()
    path = blocker.args[0]
    qtbot.waitUntil(lambda: page.state.dataset is not None and page.state.dataset.path == path)
    return path


def test_planted_copies_are_shown_and_the_cleaned_copy_lacks_them(qtbot, page, data_file):
    original = data_file.read_bytes()
    dialog = page.open_dedupe()
    assert dialog.file_edit.text() == str(data_file)
    dialog.min_chars.setValue(10)
    assert dialog.min_chars.text() == "10 characters"
    _find(qtbot, dialog)

    groups = [dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount())]
    rows = [[g.text(c) for c in range(3)] for g in groups]
    assert rows[0] == ["1. lines 1, 11", "exact", "100%"]
    assert rows[1][:2] == ["2. lines 5, 12", "near"] and 80 <= int(rows[1][2][:-1]) < 100
    assert rows[2][0] == "Filtered out: 1" and groups[2].child(0).text(0) == "Line 13"
    assert groups[2].child(0).text(3).startswith("answer too short")
    assert [groups[1].child(i).text(1) for i in range(2)] == ["kept", "dropped"]
    dialog.tree.setCurrentItem(groups[1].child(1))
    assert "line 5 (kept)" in dialog.detail.toPlainText()
    assert '">plainly</span>' in dialog.detail.toHtml()  # the word that differs, marked
    assert "keeps 10 of 13 rows (3 dropped)" in dialog.keep_label.text()
    _shoot(dialog, "dedupe.png")

    saved = _save(qtbot, page, dialog)
    assert Path(saved) == Path(page.state.project.folder) / "data" / "facts.clean.jsonl"
    assert data_file.read_bytes() == original  # the original is kept as it was
    ds = load_dataset(saved)
    outputs = [r.messages[-1]["content"] for r in ds.records]
    assert ds.kept == 10 and ds.skipped == 0 and page.state.dataset.kept == 10
    assert not any("plainly" in o or "HERE IS" in o for o in outputs)  # the two copies
    assert "Yes." not in outputs  # filtered
    assert sorted(r.messages[0]["content"] for r in ds.records) == sorted(
        _row(t)["instruction"] for t in TOPICS
    )


def test_an_unticked_group_keeps_its_rows(qtbot, page, data_file):
    from PySide6.QtCore import Qt

    dialog = page.open_dedupe()
    dialog.near_box.setChecked(False)  # exact copies only
    assert not dialog.similar.isEnabled()
    _find(qtbot, dialog)
    assert dialog.tree.topLevelItemCount() == 1  # the near copy is not one now
    dialog.tree.topLevelItem(0).setCheckState(0, Qt.CheckState.Unchecked)
    assert "keeps 13 of 13 rows (0 dropped)" in dialog.keep_label.text()
    dialog.tree.topLevelItem(0).setCheckState(0, Qt.CheckState.Checked)
    ds = load_dataset(_save(qtbot, page, dialog))
    assert ds.kept == 12
    assert [r.line for r in ds.records] == list(range(1, 13))  # lines 1-10, 12, 13 in order


def _shoot(widget, name: str) -> None:
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(Path(SHOTS) / name))
