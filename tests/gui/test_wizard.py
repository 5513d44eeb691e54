"""The New fine-tune wizard walked end to end on the tiny model, up to a started run."""

import shlex
import sys

import pytest
from PySide6.QtWidgets import QWizard

from studio.core.config import RunConfig
from studio.gui import run_launcher
from tests.gui.conftest import alpaca

STUB = "import sys, pathlib; pathlib.Path(sys.argv[1]).with_name('launched.txt').write_text(sys.argv[1])"


def test_default_command_is_python_m_studio_train(tmp_path):
    assert run_launcher.train_command(tmp_path / "run.yaml") == [
        sys.executable, "-m", "studio", "train", "--config", str(tmp_path / "run.yaml"),
    ]  # fmt: skip


@pytest.fixture
def stub_training(monkeypatch):
    """The wizard's real launch path, with the training command swapped for a stub."""
    real = run_launcher.train_command
    seen = []

    def fake(config_path):
        seen.append(real(config_path))
        return [sys.executable, "-c", STUB, str(config_path)]

    monkeypatch.setattr(run_launcher, "train_command", fake)
    return seen


def _walk_to_settings(window, qtbot, data_path, model_path):
    window.new_fine_tune()
    wiz = window.wizard
    assert wiz.currentPage() is wiz.steps[0]
    next_button = wiz.button(QWizard.WizardButton.NextButton)
    assert not next_button.isEnabled()  # nothing chosen: cannot go on
    wiz.steps[0].path.setText(str(data_path))
    wiz.steps[0].check()
    qtbot.waitUntil(lambda: wiz.steps[0].isComplete(), timeout=30000)
    assert (
        "2 records ready" in wiz.steps[0].status.text() and "lines 2" in wiz.steps[0].status.text()
    )
    wiz.next()
    assert wiz.currentPage() is wiz.steps[1]
    wiz.steps[1].source.setText(str(model_path))
    wiz.steps[1].check()
    qtbot.waitUntil(lambda: wiz.steps[1].isComplete(), timeout=60000)
    assert "LlamaForCausalLM" in wiz.steps[1].status.text()
    wiz.next()
    assert wiz.currentPage() is wiz.steps[2]
    return wiz


def test_wizard_end_to_end_starts_a_run(window, qtbot, write_jsonl, tiny_model, stub_training):
    data = write_jsonl("train.jsonl", [alpaca(1), "{broken", alpaca(3)])
    wiz = _walk_to_settings(window, qtbot, data, tiny_model)
    settings_step = wiz.steps[2]
    settings_step.buttons["Quick test"].setChecked(True)
    assert settings_step.form.widgets["train.max_steps"].value() == 30
    wiz.next()
    review = wiz.steps[3]
    assert wiz.currentPage() is review
    args = shlex.split(review.command.toPlainText())
    assert args[:2] == ["studio", "train"]
    assert args[args.index("--model") + 1] == str(tiny_model)
    assert args[args.index("--data") + 1] == str(data)
    assert args[args.index("--max-steps") + 1] == "30"
    assert review.memory.estimate is not None and review.memory.estimate.lora_params == 8 * 1024 * 2
    assert review.project.text() == "train"
    review.run_name.setText("first-run")
    wiz.next()  # Start training
    assert wiz.currentPage() is wiz.steps[4]
    run = wiz.run
    assert run.run_dir.name == "first-run" and run.run_dir.parent.name == "runs"
    cfg = RunConfig.load(run.run_dir / "run.yaml")
    assert cfg.output == str(run.run_dir)
    assert (cfg.model.path, cfg.data.path) == (str(tiny_model), str(data))
    assert (cfg.train.max_steps, cfg.lora.r) == (30, 8)
    assert stub_training == [
        [sys.executable, "-m", "studio", "train", "--config", str(run.run_dir / "run.yaml")]
    ]
    assert run.process.wait(60) == 0
    assert (run.run_dir / "launched.txt").read_text() == str(run.run_dir / "run.yaml")
    assert "Started: first-run" in wiz.steps[4].label.text()
    # The main window follows the run and remembers the project.
    assert window.current_page() == "Train"
    assert window.state.project is not None and window.state.project.name == "train"
    assert (window.state.project.folder / "project.yaml").is_file()
    assert window.state.project.config().train.max_steps == 30
    wiz.accept()
    qtbot.waitUntil(lambda: "exit code 0" in window.pages["Train"].status.text(), timeout=10000)
    assert not window.pages["Train"].timer.isActive()


def test_settings_validate_before_next(window, qtbot, write_jsonl, tiny_model):
    data = write_jsonl("train.jsonl", [alpaca(1), "{broken", alpaca(3)])
    wiz = _walk_to_settings(window, qtbot, data, tiny_model)
    step = wiz.steps[2]
    step.buttons["Balanced"].setChecked(True)
    step.form.widgets["train.lr"].setText("-1")
    wiz.next()
    assert wiz.currentPage() is step
    assert "train.lr" in step.error.text() and step.form.isVisible()
    assert "border" in step.form.widgets["train.lr"].styleSheet()
    step.form.widgets["train.lr"].setText("fast")
    wiz.next()
    assert wiz.currentPage() is step and "not a number" in step.error.text()
    step.form.widgets["train.lr"].setText("1e-4")
    step.form.widgets["lora.target_modules"].setText("q_proj, v_proj")
    wiz.next()
    assert wiz.currentPage() is wiz.steps[3]
    assert wiz.cfg.train.lr == 1e-4 and wiz.cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert "--target-modules q_proj,v_proj" in wiz.steps[3].command.toPlainText()
    wiz.reject()


def test_wizard_refuses_a_missing_file_and_a_bad_model(window, qtbot, tmp_path):
    window.new_fine_tune()
    wiz = window.wizard
    wiz.steps[0].path.setText(str(tmp_path / "missing.jsonl"))
    wiz.steps[0].check()
    assert "does not exist" in wiz.steps[0].status.text() and not wiz.steps[0].isComplete()
    wiz.next()
    assert wiz.currentPage() is wiz.steps[0]
    step = wiz.steps[1]
    step.source.setText(str(tmp_path))
    step.check()
    qtbot.waitUntil(lambda: step._task is None, timeout=30000)
    assert "config.json" in step.status.text() and not step.isComplete()
    wiz.reject()


def test_wizard_says_and_sets_the_template_for_a_model_without_one(
    window, qtbot, write_jsonl, tiny_model_no_template
):
    data = write_jsonl("train.jsonl", [alpaca(1), "{broken", alpaca(3)])
    wiz = _walk_to_settings(window, qtbot, data, tiny_model_no_template)
    assert "ChatML will be used" in wiz.steps[1].status.text()
    # What the Model step promised is what the run gets (training refuses "auto" here).
    assert wiz.cfg.data.template == "chatml"
    # The format the Data step found is the one training will use, not "auto".
    assert wiz.cfg.data.format == "alpaca"
    # The Data page shows the file the wizard checked.
    assert window.pages["Data"].records_model.rowCount() == 2
    wiz.reject()


def test_wizard_will_not_start_a_second_run_while_one_trains(
    window, qtbot, write_jsonl, tiny_model, stub_training
):
    data = write_jsonl("train.jsonl", [alpaca(1), "{broken", alpaca(3)])
    wiz = _walk_to_settings(window, qtbot, data, tiny_model)
    assert wiz.running == window.pages["Train"].running_name and wiz.running() == ""
    wiz.running = lambda: "first-run"  # as if the Train page watched a live run
    wiz.next()
    wiz.next()  # Start training: refused, with the reason; nothing launched
    assert wiz.currentPage() is wiz.steps[3]
    assert "first-run is still training" in wiz.steps[3].error.text()
    assert stub_training == []
    wiz.reject()


def test_wizard_sends_an_unguessable_table_to_the_data_page(window, qtbot, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nWhat is 2+2?,Four.\n", encoding="utf-8")
    window.new_fine_tune()
    step = window.wizard.steps[0]
    step.path.setText(str(path))
    step.check()
    qtbot.waitUntil(lambda: step._task is None, timeout=30000)
    assert not step.isComplete() and "choose the columns there" in step.status.text()
    window.wizard.reject()


def test_review_offers_the_gpu_count_only_when_there_are_several(
    window, qtbot, write_jsonl, tiny_model, stub_training
):
    data = write_jsonl("train.jsonl", [alpaca(1), "{broken", alpaca(3)])
    window.state.gpus = 0  # this machine: no GPU, no choice shown
    wiz = _walk_to_settings(window, qtbot, data, tiny_model)
    # The optimizer package's settings are in the Advanced form, as in run.yaml.
    combo = wiz.steps[2].form.widgets["train.optimizer"]
    assert [combo.itemText(i) for i in range(combo.count())] == ["adamw", "adamw_8bit"]
    wiz.next()
    review = wiz.steps[3]
    form = review.gpus_row
    assert not form.isRowVisible(review.gpus)
    wiz.back()
    window.state.gpus = 4  # as on a machine with four GPUs
    wiz.next()
    assert form.isRowVisible(review.gpus) and review.gpus.maximum() == 4
    review.gpus.setValue(2)
    args = shlex.split(review.command.toPlainText())
    assert args[args.index("--nproc") + 1] == "2" and args[args.index("--device") + 1] == "cuda"
    assert wiz.cfg.train.processes == 2
    review.run_name.setText("on-two")
    wiz.next()
    cfg = RunConfig.load(wiz.run.run_dir / "run.yaml")
    assert (cfg.train.processes, cfg.model.device) == (2, "cuda")
    assert wiz.run.process.wait(60) == 0
    wiz.accept()
    qtbot.waitUntil(lambda: "exit code 0" in window.pages["Train"].status.text(), timeout=10000)
