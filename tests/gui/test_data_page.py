"""The Data page: bad lines listed with their line numbers, raw lines, column mapping, the
training text with loss highlighted, the histogram, drag and drop, and a 200,000-record file."""

import gc
import json
import time

from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent

from tests.gui.conftest import alpaca


def _wait_loaded(qtbot, page, timeout=60000):
    qtbot.waitUntil(
        lambda: page._load_task is None and page.state.dataset is not None, timeout=timeout
    )


def test_bad_lines_are_listed_with_line_numbers(window, qtbot, write_jsonl):
    rows = [alpaca(1), "{not json", alpaca(3), {"instruction": "no output here"}, alpaca(5)]
    path = write_jsonl("bad.jsonl", rows)
    page = window.pages["Data"]
    window.show_page("Data")
    page.import_file(str(path))
    _wait_loaded(qtbot, page)
    assert page.records_model.rowCount() == 3
    assert [page.records_model.index(r, 0).data() for r in range(3)] == ["1", "3", "5"]
    problems = page.problems_model
    assert problems.rowCount() == 2
    assert [problems.index(r, 0).data() for r in range(2)] == ["2", "4"]
    assert all(problems.index(r, 2).data() for r in range(2))  # a reason for each
    assert page.tabs.tabText(1) == "Skipped (2)"
    assert "2 skipped" in page.summary.text()
    page.tabs.setCurrentIndex(1)
    page.problems_view.selectRow(0)
    assert page.preview.toPlainText() == "{not json"
    assert "Line 2" in page.legend.text()
    page.problems_view.selectRow(1)
    assert "no output here" in page.preview.toPlainText() and "Line 4" in page.legend.text()


def test_unusable_file_shows_one_clear_error(window, qtbot, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    page = window.pages["Data"]
    page.import_file(str(path))
    qtbot.waitUntil(lambda: page._load_task is None, timeout=30000)
    assert "empty.jsonl" in page.summary.text() and page.state.dataset is None
    assert not page.progress.isVisible()


def test_csv_column_mapping_and_format_override(window, qtbot, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,notes\nWhat is 2+2?,Four.,x\nCapital of France?,Paris.,y\n")
    page = window.pages["Data"]
    window.show_page("Data")
    page.import_file(str(path))
    _wait_loaded(qtbot, page)
    assert page.columns_box.isVisible()
    assert page.column_combos["instruction"].currentText() == "question"
    assert page.column_combos["output"].currentText() == "answer"
    assert page.format_combo.currentText() == "alpaca"
    first = page.state.dataset
    page.column_combos["output"].setCurrentText("notes")
    page.reimport()
    qtbot.waitUntil(
        lambda: page.state.dataset is not first and page._load_task is None, timeout=30000
    )
    assert page.state.dataset.records[0].messages[-1]["content"] == "x"
    page.format_combo.setCurrentText("text")
    page.column_combos["text"].setCurrentText("question")
    second = page.state.dataset
    page.reimport()
    qtbot.waitUntil(
        lambda: page.state.dataset is not second and page._load_task is None, timeout=30000
    )
    assert page.state.dataset.format == "text" and page.records_model.text_mode


def test_drag_and_drop_imports(window, qtbot, write_jsonl):
    path = write_jsonl("dropped.jsonl", [alpaca(i) for i in range(3)])
    page = window.pages["Data"]
    window.show_page("Data")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    page.dropEvent(event)
    _wait_loaded(qtbot, page)
    assert page.state.dataset.kept == 3 and page.path_label.text() == "dropped.jsonl"


def test_training_text_highlights_loss_and_histogram_marks_overlong(
    window, qtbot, write_jsonl, tiny_model
):
    long_answer = "word " * 300
    rows = [alpaca(1), {"instruction": "Tell me a long story.", "output": long_answer}, alpaca(3)]
    path = write_jsonl("chat.jsonl", rows)
    data, model = window.pages["Data"], window.pages["Model"]
    window.show_page("Data")
    data.import_file(str(path))
    _wait_loaded(qtbot, data)
    assert "[assistant]" in data.preview.toPlainText()  # before a model: the plain record
    window.state.update_config(train=window.state.config.train.__class__(seq_len=64))
    model.source.setText(str(tiny_model))
    model.load()
    qtbot.waitUntil(lambda: data.tokenized is not None, timeout=60000)
    lengths = data.tokenized.lengths
    assert len(lengths) == 3 and lengths[1] > 64 > lengths[0]
    assert data.histogram.plot is not None
    assert abs(data.histogram.over_share - 1 / 3) < 1e-9
    assert "33.3% longer than 64" in data.histogram.caption.text()
    data.records_view.selectRow(0)
    qtbot.waitUntil(
        lambda: data._render_task is None and "tokens" in data.legend.text(), timeout=30000
    )
    trained, untrained = _fragments(data.preview)
    assert "The number is 1." in "".join(trained)
    assert "Say the number 1." in "".join(untrained) and "Say the number" not in "".join(trained)
    assert "Line 1" in data.legend.text()


def _fragments(text_edit):
    from studio.gui import theme

    trained, untrained = [], []
    block = text_edit.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            bg = frag.charFormat().background().color()
            (trained if bg == theme.trained_background() else untrained).append(frag.text())
            it += 1
        block = block.next()
    return trained, untrained


def test_200k_records_import_off_thread_and_scroll_lazily(window, qtbot, tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(200_000):
            f.write(json.dumps(alpaca(i)) + "\n")
    page = window.pages["Data"]
    window.show_page("Data")
    # Let the page paint first: its first paint took 0.2 s here and 0.6 s on a slower CI
    # machine, which is not the import's doing. Then collect what earlier tests left behind:
    # a full collection of this test process's large heap can hold the GIL for most of a
    # second, which is not the import's doing either.
    qtbot.wait(300)
    gc.collect()
    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    page.import_file(str(path))
    assert page.progress.isVisible()
    _wait_loaded(qtbot, page, timeout=120000)
    timer.stop()
    # The event loop kept running during the import: no stall anywhere near a second (a
    # worker that never let go of the GIL froze the window for 0.5-0.7 s here).
    stalls = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 5 and max(stalls) < 0.4, max(stalls)
    model = page.records_model
    assert model.rowCount() == 200_000
    assert model.index(199_999, 0).data() == "200000"
    assert model.index(199_999, 3).data() == "Say the number 199999."
    page.records_view.scrollToBottom()
    qtbot.wait(10)


def test_unguessable_csv_columns_are_asked_for_then_reach_the_run_config(window, qtbot, tmp_path):
    from studio.core.data.split import load_split
    from studio.core.project import create_project

    project = create_project("csv", tmp_path / "projects")
    window.state.set_project(project)
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nWhat is 2+2?,Four.\nCapital of France?,Paris.\n", encoding="utf-8")
    page = window.pages["Data"]
    window.show_page("Data")
    page.import_file(str(path))
    qtbot.waitUntil(lambda: page._load_task is None, timeout=30000)
    # Nothing to guess from: the page asks which column is which (it used to give up).
    assert page.state.dataset is None and page.columns_box.isVisible()
    assert "choose below which column" in page.summary.text()
    assert [page.column_combos["instruction"].itemText(i) for i in range(3)] == ["(none)", "q", "a"]
    page.column_combos["instruction"].setCurrentText("q")
    page.column_combos["output"].setCurrentText("a")
    page.reimport()
    _wait_loaded(qtbot, page)
    assert page.records_model.rowCount() == 2
    # Training reads the file exactly as the page did: same format, same columns ...
    data = window.state.config.data
    assert (data.format, data.columns) == ("alpaca", {"instruction": "q", "output": "a"})
    train, _, _ = load_split(data, seed=0)
    assert train.records[1].messages[-1] == {"role": "assistant", "content": "Paris."}
    # ... and the project remembers it when it is opened again.
    from studio.core.project import open_project

    again = open_project(project.folder)
    assert again.dataset == str(path) and again.config().data.columns == data.columns


def test_another_project_starts_clean_and_a_missing_file_is_said(
    window, qtbot, write_jsonl, tmp_path
):
    from studio.core.project import create_project

    page = window.pages["Data"]
    page.import_file(str(write_jsonl("a.jsonl", [alpaca(1), alpaca(2)])))
    _wait_loaded(qtbot, page)
    window.state.set_project(create_project("empty", tmp_path / "p1"))
    assert window.state.dataset is None and page.records_model.rowCount() == 0
    assert "No data yet" in page.summary.text()
    gone = create_project("gone", tmp_path / "p2", dataset=str(tmp_path / "moved.jsonl"))
    window.state.set_project(gone)
    assert "data file is missing" in page.summary.text() and "moved.jsonl" in page.summary.text()


def test_plain_text_counts_tokens_on_a_model_without_a_chat_template(
    window, qtbot, tmp_path, tiny_model_no_template
):
    from studio.core.model_info import read_model_info

    path = tmp_path / "notes.txt"
    path.write_text(
        "First paragraph of text.\n\nSecond paragraph, a bit longer.\n", encoding="utf-8"
    )
    page = window.pages["Data"]
    page.import_file(str(path))
    _wait_loaded(qtbot, page)
    window.state.set_model(read_model_info(str(tiny_model_no_template)))
    qtbot.waitUntil(lambda: page._tok_task is None, timeout=60000)
    # Continued pre-training needs no chat template: counted, as training would.
    assert page.tokenized is not None and len(page.tokenized.lengths) == 2
    assert "Could not tokenise" not in page.histogram.caption.text()
