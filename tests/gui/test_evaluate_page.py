"""The Evaluate page: a real `studio eval` child driven from the page (base vs a run, the
table and the answers side by side), a refused evaluation in one sentence, past reports
opened from the list, and the Train page's "Evaluate" button that leads here."""

import json

import pytest

from studio.core.project import create_project
from tests.export_runs import make_run

EVAL_TIMEOUT = 120000


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("base") / "m")


@pytest.fixture
def project(studio_home):
    return create_project("Evals", studio_home / "projects")


@pytest.fixture
def run(project, base_model):
    run = make_run(project.runs_dir, base_model, name="tuned")
    events = [{"type": "start", "time": 1000.0, "total_steps": 10},
              {"type": "done", "step": 10, "status": "completed", "final_loss": 0.5}]  # fmt: skip
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


@pytest.fixture
def page(window):
    page = window.pages["Evaluate"]
    yield page
    if page.job is not None:  # a failed test leaves no process behind
        page.job.stop_and_wait()


def _listed(qtbot, page, run):
    qtbot.waitUntil(lambda: page.run_list.count() > 0, timeout=10000)
    item = page.run_list.item(0)
    assert item.text().startswith("tuned") and item.data(256) == str(run)  # UserRole
    return item


def test_evaluate_base_and_run_from_the_page(qtbot, window, page, project, run, tmp_path):
    from PySide6.QtCore import Qt

    window.state.set_project(project)
    window.show_page("Evaluate")
    item = _listed(qtbot, page, run)
    assert not page.evaluate_button.isEnabled()  # nothing chosen yet
    item.setCheckState(Qt.CheckState.Checked)
    page.data_edit.setText(str(run / "data.jsonl"))
    page.samples.setValue(2)
    page.max_tokens.setValue(4)
    page.name_edit.setText("from-page")
    page.judge_key.setText("hidden")  # no URL: not sent, and never shown
    command = page.command_view.toPlainText()
    assert command.startswith(f"studio eval --runs {run}") and "--name from-page" in command
    with qtbot.waitSignal(page.evaluation_finished, timeout=EVAL_TIMEOUT) as blocker:
        page.evaluate_button.click()
        assert not page.form.isEnabled() and window.state.job == "Evaluating"
    assert blocker.args == ["completed"], page.message.text()
    folder = run / "eval" / "from-page"
    assert page.report_folder == str(folder) and page.open_button.isEnabled()
    report = json.loads((folder / "report.json").read_text())
    assert [m["key"] for m in report["models"]] == ["base", "tuned"]
    html = page.table.toHtml()
    assert "Exact match" in html and "tuned" in html and "What is" in html
    assert page.past_box.currentData() == str(folder) and page.form.isEnabled()
    page.resize(1300, 800)
    page.grab().save(str(tmp_path / "evaluate_page.png"))
    print(f"\nscreenshot: {tmp_path / 'evaluate_page.png'}")


def test_a_refused_evaluation_says_why_in_one_sentence(qtbot, window, page, project, run, tmp_path):
    from PySide6.QtCore import Qt

    window.state.set_project(project)
    item = _listed(qtbot, page, run)
    item.setCheckState(Qt.CheckState.Checked)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    page.data_edit.setText(str(empty))
    with qtbot.waitSignal(page.evaluation_finished, timeout=EVAL_TIMEOUT) as blocker:
        page.evaluate_button.click()
    assert blocker.args == ["failed"]
    message = page.message.text()
    assert message.startswith("data: empty.jsonl is empty") and "\n" not in message
    assert "Traceback" not in message and not (run / "eval").exists()


def test_the_train_page_button_opens_the_run_and_its_past_report(qtbot, window, page, run):
    old = run / "eval" / "earlier"
    old.mkdir(parents=True)
    report = {"name": "earlier", "models": [
        {"key": "base", "loss": 2.5, "perplexity": 12.18, "exact_match": 0.0, "contains": 0.0, "rouge_l": 0.1},
        {"key": "tuned", "loss": 0.7, "perplexity": 2.01, "exact_match": 0.5, "contains": 1.0, "rouge_l": 0.8},
    ], "samples": [{"prompt": "Q?", "reference": "A.", "answers": {
        "base": {"text": "<b>ramble</b>"}, "tuned": {"text": "A.", "exact_match": True}}}]}  # fmt: skip
    (old / "report.json").write_text(json.dumps(report))
    view = window.pages["Train"].after_run
    view.show_run(run, "completed", live=False)
    assert not view.evaluate_button.isHidden()
    view.evaluate_button.click()
    assert window.current_page() == "Evaluate"
    assert page.chosen_runs() == [str(run)] and page.report_folder == str(old)
    html = page.table.toHtml()
    assert "0.700" in html and "&lt;b&gt;ramble&lt;/b&gt;" in html  # answers are text
    assert page.past_box.count() == 1 and page.past_box.currentText() == "earlier"


def test_a_run_finished_while_the_page_was_away_is_listed_when_it_shows(
    qtbot, window, page, project, base_model
):
    from PySide6.QtCore import Qt

    window.state.set_project(project)
    window.show_page("Evaluate")
    qtbot.waitUntil(
        lambda: page.run_list.count() == 0 and not page.message.text().startswith("Cannot")
    )
    first = make_run(project.runs_dir, base_model, name="first")
    (first / "events.jsonl").write_text('{"type": "done", "step": 4, "status": "completed"}\n')
    window.show_page("Export")
    window.show_page("Evaluate")
    qtbot.waitUntil(lambda: page.run_list.count() == 1, timeout=10000)
    page.run_list.item(0).setCheckState(Qt.CheckState.Checked)
    # Another run from a terminal: listed on the next show, the one chosen still chosen.
    second = make_run(project.runs_dir, base_model, name="second")
    (second / "events.jsonl").write_text('{"type": "done", "step": 4, "status": "completed"}\n')
    window.show_page("Export")
    window.show_page("Evaluate")
    qtbot.waitUntil(lambda: page.run_list.count() == 2, timeout=10000)
    assert page.chosen_runs() == [str(first)]
