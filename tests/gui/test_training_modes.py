"""Training modes in the app (issue 11): the wizard's goals set train.mode and the command,
a file that does not fit the goal is said, the Advanced tabs follow the mode, the Train page
draws a preference run's rewards and a distillation's KL, and the Data page shows a pair's
two answers side by side."""

import json
import shlex

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWizard

from studio.core.config import PAIR_MODES, RunConfig, TrainConfig
from studio.core.data.records import Dataset, Record
from studio.core.errors import ConfigError
from studio.gui.forms import ConfigForm
from studio.gui.goals import ANSWERS, DISTILL, PREFERENCES
from studio.gui.run_worker import METRIC_COLUMNS, MetricRows, group_events
from tests.gui.conftest import alpaca

PAIRS = [
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "I am not sure."},
    {"prompt": "2 + 2?", "chosen": "4.", "rejected": "Maybe 5."},
]


def pair_dataset(path) -> Dataset:
    """A file of preference pairs, imported by the core's own reader."""
    from studio.core.data.formats import load_dataset

    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    ds = load_dataset(path)
    assert ds.format == "pairs" and all(r.is_pair for r in ds.records) and ds.kept == 2
    return ds


def _open(window, qtbot, data, goal):
    """The wizard on its Data step with this goal and data (a path, or a Dataset)."""
    if isinstance(data, Dataset):
        window.state.set_dataset(data)
    window.new_fine_tune()
    wiz = window.wizard
    step = wiz.steps[0]
    step.goals.set_goal(goal)
    if not isinstance(data, Dataset):
        step.path.setText(str(data))
        step.check()
        qtbot.waitUntil(lambda: step.dataset is not None, timeout=30000)
    return wiz


def _to_review(wiz, qtbot, model, teacher=None):
    wiz.next()
    model_step = wiz.steps[1]
    assert wiz.currentPage() is model_step
    model_step.source.setText(str(model))
    model_step.check()
    assert model_step.form.isRowVisible(model_step.teacher) == (teacher is not None)
    if teacher is not None:
        assert model_step.model_label.text() == "Student"
        model_step.teacher.model_edit.setText(str(teacher))
        model_step.teacher.check()
        qtbot.waitUntil(lambda: model_step.teacher.is_ready(), timeout=60000)
    qtbot.waitUntil(model_step.isComplete, timeout=60000)
    wiz.next()
    assert wiz.currentPage() is wiz.steps[2]
    settings = wiz.steps[2]
    wiz.next()
    assert wiz.currentPage() is wiz.steps[3]
    return settings, shlex.split(wiz.steps[3].command.toPlainText())


def _modes(form) -> list[str]:
    box = form.widgets["train.mode"]
    return [box.itemText(i) for i in range(box.count())]


def _tab_shown(form, title) -> bool:
    return any(form.tabText(i) == title and form.isTabVisible(i) for i in range(form.count()))


def test_teach_answers_is_the_default_and_trains_sft(window, qtbot, write_jsonl, tiny_model):
    data = write_jsonl("train.jsonl", [alpaca(1), alpaca(2)])
    window.new_fine_tune()
    wiz = window.wizard
    assert wiz.goal() is ANSWERS and wiz.steps[0].goals.buttons["answers"].isChecked()
    wiz.steps[0].path.setText(str(data))
    wiz.steps[0].check()
    qtbot.waitUntil(wiz.steps[0].isComplete, timeout=30000)
    settings, args = _to_review(wiz, qtbot, tiny_model)
    assert wiz.cfg.train.mode == "sft" and "--mode" not in args and "--teacher" not in args
    assert _modes(settings.form) == ["sft"] and not settings.form.widgets["train.mode"].isEnabled()
    assert not _tab_shown(settings.form, "Preferences")
    assert not _tab_shown(settings.form, "Distillation")
    wiz.reject()


def test_teach_preferences_trains_dpo_with_orpo_and_simpo_under_advanced(
    window, qtbot, tmp_path, tiny_model
):
    wiz = _open(window, qtbot, pair_dataset(tmp_path / "pairs.jsonl"), PREFERENCES)
    assert wiz.steps[0].isComplete() and "2 records ready" in wiz.steps[0].status.text()
    settings, args = _to_review(wiz, qtbot, tiny_model)
    assert args[args.index("--mode") + 1] == "dpo" and wiz.cfg.train.mode == "dpo"
    assert _modes(settings.form) == list(PAIR_MODES)
    assert _tab_shown(settings.form, "Preferences")
    assert not _tab_shown(settings.form, "Distillation")
    wiz.back()  # Advanced: SimPO, with its own margin
    settings.form.widgets["train.mode"].setCurrentText("simpo")
    settings.form.widgets["preference.simpo_gamma"].setText("0.8")
    wiz.next()
    args = shlex.split(wiz.steps[3].command.toPlainText())
    assert args[args.index("--mode") + 1] == "simpo"
    assert args[args.index("--simpo-gamma") + 1] == "0.8"
    assert (wiz.cfg.train.mode, wiz.cfg.preference.simpo_gamma) == ("simpo", 0.8)
    wiz.reject()


def test_imitate_a_big_model_picks_a_teacher_and_trains_distill(
    window, qtbot, write_jsonl, tiny_model, tiny_model_no_template
):
    data = write_jsonl("train.jsonl", [alpaca(1), alpaca(2)])
    wiz = _open(window, qtbot, data, DISTILL)
    assert wiz.steps[0].isComplete()
    wiz.next()
    model_step = wiz.steps[1]
    model_step.source.setText(str(tiny_model))
    model_step.check()
    qtbot.waitUntil(lambda: model_step.info is not None, timeout=60000)
    assert not model_step.isComplete()  # a student without a teacher cannot go on
    wiz.back()
    settings, args = _to_review(wiz, qtbot, tiny_model, teacher=tiny_model_no_template)
    # The same size as the student: said, not refused.
    assert "not bigger than the student" in wiz.steps[1].teacher.status.text()
    # The Review step's memory counts the teacher's weights too.
    memory = wiz.steps[3].memory
    assert memory.estimate.teacher > 0 and "+ teacher" in memory.values["Model weights"].text()
    assert args[args.index("--mode") + 1] == "distill"
    assert args[args.index("--teacher") + 1] == str(tiny_model_no_template)
    assert args[args.index("--model") + 1] == str(tiny_model)
    assert (wiz.cfg.train.mode, wiz.cfg.distill.teacher) == ("distill", str(tiny_model_no_template))
    assert _modes(settings.form) == ["distill"] and _tab_shown(settings.form, "Distillation")
    assert settings.form.widgets["distill.teacher"].text() == str(tiny_model_no_template)
    wiz.reject()


def test_a_file_that_does_not_fit_the_goal_is_said_not_trained(
    window, qtbot, tmp_path, write_jsonl
):
    wiz = _open(window, qtbot, pair_dataset(tmp_path / "pairs.jsonl"), ANSWERS)
    step = wiz.steps[0]
    assert not step.isComplete() and "preference pairs" in step.status.text()
    assert "Teach it preferences" in step.status.text()
    wiz.next()
    assert wiz.currentPage() is step  # refused, with the reason above
    step.goals.set_goal(DISTILL)
    assert not step.isComplete() and "preference pairs" in step.status.text()
    step.goals.set_goal(PREFERENCES)  # the goal that fits: no reload needed
    assert step.isComplete() and "does not" not in step.status.text()
    data = write_jsonl("answers.jsonl", [alpaca(1), alpaca(2)])
    step.path.setText(str(data))
    step.format.setCurrentText("auto")  # it showed the pairs file's detected format; this checks
    qtbot.waitUntil(lambda: step._task is None and step.dataset is not None, timeout=30000)
    assert not step.isComplete() and "not pairs of a better and a worse answer" in (
        step.status.text()
    )
    wiz.next()
    assert wiz.currentPage() is step
    wiz.reject()


def test_the_settings_form_shows_a_modes_tab_only_for_that_mode(qtbot):
    form = ConfigForm()
    qtbot.addWidget(form)
    form.set_config(RunConfig())
    assert _modes(form) == ["sft", "dpo", "orpo", "simpo", "distill"]
    assert not _tab_shown(form, "Preferences") and not _tab_shown(form, "Distillation")
    form.widgets["train.mode"].setCurrentText("orpo")
    assert _tab_shown(form, "Preferences") and not _tab_shown(form, "Distillation")
    form.widgets["preference.beta"].setText("0.2")
    cfg = form.build(RunConfig())
    assert (cfg.train.mode, cfg.preference.beta) == ("orpo", 0.2)
    form.widgets["train.mode"].setCurrentText("distill")
    assert _tab_shown(form, "Distillation") and not _tab_shown(form, "Preferences")
    with pytest.raises(ConfigError) as e:  # distillation needs a teacher, named as in run.yaml
        form.build(RunConfig())
    assert e.value.field == "distill.teacher"
    form.widgets["distill.teacher"].setText("big-model")
    form.widgets["distill.loss"].setCurrentText("jsd")
    cfg = form.build(RunConfig())
    assert (cfg.train.mode, cfg.distill.teacher, cfg.distill.loss) == (
        "distill",
        "big-model",
        "jsd",
    )
    form.set_config(RunConfig(train=TrainConfig(mode="dpo")))  # a re-run of a DPO run
    assert form.widgets["train.mode"].currentText() == "dpo" and _tab_shown(form, "Preferences")


# --- the Train page -------------------------------------------------------------------------


def step_event(s: int, **metrics) -> dict:
    ev = {"type": "step", "step": s, "epoch": s / 10, "loss": 0.7 - s / 100, "lr": 1e-4,
          "grad_norm": 1.0, "tokens_per_s": 50.0, "elapsed_s": s, "eta_s": 10 - s}  # fmt: skip
    if metrics:
        ev["metrics"] = metrics
    return ev


def preference_step(s: int) -> dict:
    chosen, rejected = 0.1 * s, -0.05 * s
    return step_event(
        s,
        **{"rewards/chosen": chosen, "rewards/rejected": rejected,
           "rewards/margins": chosen - rejected, "rewards/accuracies": min(1.0, 0.5 + s / 20)},
    )  # fmt: skip


def write_run(folder, events):
    folder.mkdir(parents=True)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return folder


def replay(qtbot, page, folder):
    page.open_run_folder(folder)
    qtbot.waitUntil(lambda: page.worker is None, timeout=30000)
    return page.plots


def curve(plots, metric):
    item = plots.mode_curves[metric][0]  # the data given (getData is clipped to the view)
    x, y = item.xData, item.yData
    return list(x), list(y)


def test_metric_rows_travel_only_with_a_modes_figures():
    sft = group_events([step_event(1), step_event(2)])
    assert len(sft) == 1 and isinstance(sft[0], np.ndarray)
    items = group_events([preference_step(1), step_event(2), {"type": "checkpoint", "step": 2}])
    rows = items[1]
    assert isinstance(rows, MetricRows) and rows.rows.shape == (2, 1 + len(METRIC_COLUMNS))
    assert rows.rows[0, 1 + METRIC_COLUMNS.index("rewards/margins")] == pytest.approx(0.15)
    assert np.isnan(rows.rows[1, 1:]).all()  # a step without figures: gaps, not zeros
    assert items[2] == {"type": "checkpoint", "step": 2}


def test_train_page_draws_a_preference_runs_rewards(window, qtbot, tmp_path):
    page = window.pages["Train"]
    window.show_page("Train")
    evaluation = {"type": "eval", "step": 4, "eval_loss": 0.6,
                  "metrics": {"rewards/margins": 0.2, "rewards/accuracies": 0.75}}  # fmt: skip
    events = [{"type": "start", "total_steps": 8}, *map(preference_step, range(1, 5)), evaluation,
              *map(preference_step, range(5, 9)), {"type": "done", "step": 8, "adapter": "a"}]  # fmt: skip
    plots = replay(qtbot, page, write_run(tmp_path / "dpo-run", events))
    assert list(plots.mode_plots) == [
        "Reward margin (chosen − rejected)", "Reward accuracy (chosen ranked first)", "Rewards",
    ]  # fmt: skip
    steps = list(range(1, 9))
    assert curve(plots, "rewards/margins") == (steps, pytest.approx([0.15 * s for s in steps]))
    assert curve(plots, "rewards/accuracies")[1] == pytest.approx(
        [min(1.0, 0.5 + s / 20) for s in steps]
    )
    assert curve(plots, "rewards/chosen")[1] == pytest.approx([0.1 * s for s in steps])
    assert curve(plots, "rewards/rejected")[1] == pytest.approx([-0.05 * s for s in steps])
    x, y = plots.mode_curves["rewards/accuracies"][1].getData()  # the evaluation's point
    assert (list(x), list(y)) == ([4.0], [0.75])
    assert "kl" not in plots.mode_curves  # no KL plot for a preference run
    assert "margin 1.200 · accuracy 90%" in page.progress_text.text()
    assert len(plots.raw_curve.getData()[0]) == 8  # the loss as before


def test_train_page_draws_a_distillations_kl_and_an_sft_run_as_before(window, qtbot, tmp_path):
    page = window.pages["Train"]
    window.show_page("Train")
    steps = [step_event(s, kl=1.0 / s, ce=2.0 - s / 10) for s in range(1, 6)]
    plots = replay(qtbot, page, write_run(tmp_path / "distill", [
        {"type": "start", "total_steps": 5}, *steps, {"type": "done", "step": 5, "adapter": "a"},
    ]))  # fmt: skip
    assert list(plots.mode_plots) == ["KL to the teacher", "Cross-entropy on the answers"]
    assert curve(plots, "kl") == ([1, 2, 3, 4, 5], pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2]))
    assert curve(plots, "ce")[1] == pytest.approx([1.9, 1.8, 1.7, 1.6, 1.5])
    assert "KL 0.2000" in page.progress_text.text()
    # An SFT run opened next: no third row, and the page as it always was.
    plots = replay(qtbot, page, write_run(tmp_path / "sft", [
        {"type": "start", "total_steps": 3}, *map(step_event, (1, 2, 3)),
        {"type": "done", "step": 3, "adapter": "a"},
    ]))  # fmt: skip
    assert plots.mode_plots == {} and plots.mode_curves == {}
    assert plots.view.ci.layout.rowCount() == 2
    assert list(plots.raw_curve.getData()[0]) == [1, 2, 3]
    assert page.progress_text.text().startswith("loss 0.6700 · 50 tok/s")


def test_a_resumed_preference_run_replaces_the_figures_after_its_checkpoint(qtbot):
    from studio.gui.plots import TrainingPlots

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    items = group_events([preference_step(s) for s in range(1, 7)])
    plots.add_steps(items[0])
    plots.add_metrics(items[1].rows)
    plots.start_at(3)  # resumed from step 3: steps 4 to 6 are trained again
    again = group_events([step_event(s, **{"rewards/margins": -1.0}) for s in (4, 5)])
    plots.add_steps(again[0])
    plots.add_metrics(again[1].rows)
    plots.redraw()
    assert curve(plots, "rewards/margins") == (
        [1, 2, 3, 4, 5],
        pytest.approx([0.15, 0.3, 0.45, -1.0, -1.0]),
    )


# --- the Data page --------------------------------------------------------------------------


def test_data_page_shows_a_pairs_two_answers_side_by_side(window, qtbot, tmp_path):
    page = window.pages["Data"]
    window.show_page("Data")
    ds = pair_dataset(tmp_path / "pairs.jsonl")
    ds.records[1].messages = [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "2 + 2?"},
    ]
    page.show_dataset(ds)
    model = page.records_model
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers == ["Line", "Turns", "Prompt", "Better answer", "Worse answer"]
    assert [model.index(0, c).data() for c in range(2, 5)] == [
        "Capital of France?", "Paris.", "I am not sure.",
    ]  # fmt: skip
    view = page.pair_view
    assert view.isVisible() and not page.preview.isVisible()
    assert view.prompt.toPlainText() == "Capital of France?"
    assert (view.chosen.toPlainText(), view.rejected.toPlainText()) == ("Paris.", "I am not sure.")
    assert "preference pair" in page.legend.text() and "Line 1" in page.legend.text()
    # Left of the worse one, as the labels say.
    left = view.chosen.mapTo(view, view.chosen.rect().topLeft()).x()
    assert left < view.rejected.mapTo(view, view.rejected.rect().topLeft()).x()
    page.records_view.selectRow(1)
    assert view.prompt.toPlainText() == "[system]\nBe exact.\n\n[user]\n2 + 2?"
    assert view.chosen.toPlainText() == "4." and view.rejected.toPlainText() == "Maybe 5."
    # An SFT file afterwards looks as it always did.
    sft = Dataset(path=str(tmp_path / "a.jsonl"), format="messages", records=[
        Record(line=1, messages=[{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello."}]),
    ])  # fmt: skip
    page.show_dataset(sft)
    assert model.headerData(4, Qt.Orientation.Horizontal) == "Assistant"
    assert page.preview.isVisible() and not view.isVisible()
    assert "[assistant]\nHello." in page.preview.toPlainText()


def test_wizard_next_button_waits_for_a_fitting_file(window, qtbot, tmp_path):
    wiz = _open(window, qtbot, pair_dataset(tmp_path / "pairs.jsonl"), ANSWERS)
    assert not wiz.button(QWizard.WizardButton.NextButton).isEnabled()
    wiz.steps[0].goals.set_goal(PREFERENCES)
    assert wiz.button(QWizard.WizardButton.NextButton).isEnabled()
    wiz.reject()


def test_the_wizard_opens_on_the_projects_last_goal_and_keeps_its_method(window, tmp_path):
    import dataclasses

    from studio.gui.goals import with_goal

    cfg = window.state.config
    window.state.update_config(train=dataclasses.replace(cfg.train, mode="orpo"))
    window.new_fine_tune()
    assert window.wizard.goal() is PREFERENCES
    window.wizard.reject()
    orpo = window.state.config
    assert with_goal(orpo, PREFERENCES).train.mode == "orpo"  # kept: one of the goal's methods
    assert with_goal(orpo, ANSWERS).train.mode == "sft"
    distill = with_goal(orpo, DISTILL, "big", "4bit")
    assert (distill.train.mode, distill.distill.teacher, distill.distill.teacher_quant) == (
        "distill", "big", "4bit",
    )  # fmt: skip
    assert with_goal(distill, ANSWERS).distill.teacher == ""  # no stray --teacher for SFT
    with pytest.raises(ConfigError):
        with_goal(orpo, DISTILL)  # distillation without a teacher is refused, by name


def test_a_pairs_token_length_is_its_longer_side(tmp_path, tiny_model):
    """The Data page's histogram counts a pair as it trains: prompt plus its longer answer."""
    from studio.core.data.examples import build_examples
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer
    from studio.gui.pages.data import tokenize_records

    records = pair_dataset(tmp_path / "pairs.jsonl").records
    got = tokenize_records(records, str(tiny_model), "auto", 256, "assistant", False)
    tok = load_tokenizer(str(tiny_model))
    chat = resolve_template(tok, "auto")
    expected = []
    for r in records:
        sides = [
            Record(r.line, [*r.messages, {"role": "assistant", "content": answer}])
            for answer in (r.chosen, r.rejected)
        ]
        expected.append(max(build_examples(sides, tok, chat, 256)[1].lengths))
    assert got.lengths == expected and len(expected) == 2
    assert all(
        n > len(tok(r.messages[0]["content"])["input_ids"]) + 2
        for n, r in zip(expected, records, strict=True)
    )
