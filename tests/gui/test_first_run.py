"""The first fine-tune a person makes: the wizard's defaults on the bundled demo, trained for
real, end their answers at the end-of-turn token where the base model rambles on; the Train
page shows it side by side and opens Chat on the run with suggestions from the data."""

import pytest
from PySide6.QtWidgets import QWizard

from studio.core import after_run, presets
from studio.core.config import RunConfig, flat_settings


@pytest.mark.slow
def test_wizard_defaults_on_the_demo_learn_to_end_their_answers(window, qtbot):
    window.open_demo()
    window.new_fine_tune()
    wiz = window.wizard
    for step in wiz.steps[:2]:  # Next, Next: the demo's data and model as they come
        qtbot.waitUntil(step.isComplete, timeout=60000)
        wiz.next()
    settings_step = wiz.steps[2]
    qtbot.waitUntil(lambda: wiz.sizes is not None, timeout=30000)
    assert settings_step.buttons[presets.DEFAULT_PRESET].isChecked()
    assert "6 epochs, 60 steps" in settings_step.sizing[presets.DEFAULT_PRESET].text()
    wiz.next()
    review = wiz.steps[3]
    qtbot.waitUntil(lambda: review.time.text().startswith("About"), timeout=60000)
    assert "60 steps" in review.time.text() and "this machine" in review.time.text()
    wiz.button(QWizard.WizardButton.CommitButton).click()  # Start training, for real
    run_dir = wiz.run.run_dir
    wiz.accept()
    # The app's default run is `studio train --demo`'s: one preset code, sized for the demo.
    planned = flat_settings(RunConfig.load(run_dir / "run.yaml"))
    assert {k: planned[k] for k in presets.demo_settings()} == presets.demo_settings()

    page = window.pages["Train"]
    qtbot.waitUntil(lambda: page.worker is None, timeout=240000)
    assert page.run_state.status == "completed", page.status.text()
    view = page.after_run
    qtbot.waitUntil(lambda: view.comparison is not None, timeout=120000)
    assert view.isVisible() and view.chat_button.isVisible()
    assert len(view.comparison.samples) == 4 and view.comparison.source == "validation"
    assert "It learned to end its answers" in page.status.text()

    # The acceptance measure, taken here: ten prompts of the demo data, at most 48 tokens.
    result = after_run.compare_with_base(run_dir, 10, save=False)
    assert len(result.samples) == 10
    print(
        f"\nend-of-turn within 48 tokens: tuned {result.tuned_stops}/10, base {result.base_stops}/10"
    )
    assert result.tuned_stops >= 8 and result.base_stops <= 2

    view.chat_button.click()
    chat = window.pages["Chat"]
    assert window.current_page() == "Chat" and chat.compare_box.isChecked()
    assert chat.pickers[0].choice().adapter == str(run_dir / "adapter")
    assert chat.pickers[1].choice().adapter == ""  # the base model alone, beside it
    assert chat.pickers[0].choice().model == chat.pickers[1].choice().model
    bar = chat.suggestions
    qtbot.waitUntil(lambda: bar.source == str(run_dir) and bar.task is None, timeout=30000)
    held_out = {
        s.prompt for s in after_run.held_out_prompts(RunConfig.load(run_dir / "run.yaml"), 4)[0]
    }
    assert set(bar.prompts) == held_out
    bar.buttons[1].click()
    assert chat.input.toPlainText() == bar.prompts[1]
    assert not chat.hint.isVisible()  # this model ends its answers


def test_a_run_opened_later_shows_its_saved_answers_or_offers_them(window, qtbot, tmp_path):
    import json

    folder = tmp_path / "runs" / "old"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    RunConfig().save(folder / "run.yaml")
    events = [{"type": "start", "total_steps": 2}, {"type": "step", "step": 2, "loss": 1.0},
              {"type": "done", "step": 2, "adapter": str(folder / "adapter"), "status": "completed"}]  # fmt: skip
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    sample = after_run.Sample([{"role": "user", "content": "Hi <b>?"}], "Hello.", "x " * 200, False,
                              "Hello.", True)  # fmt: skip
    after_run.Comparison([sample], 48, "training").save(folder)
    page = window.pages["Train"]
    window.show_page("Train")
    page.open_run_folder(folder)
    qtbot.waitUntil(lambda: page.worker is None, timeout=30000)
    view = page.after_run
    assert view.isVisible() and view.task is None  # nothing generated: it was saved
    html = view.table.toHtml()
    assert "Hi &lt;b&gt;?" in html and "…" in html  # escaped, and a long ramble cut short
    assert "It learned to end its answers (tuned 1 of 1, base 0 of 1)" in page.status.text()
    assert "from the training data" in view.summary.text()
    # Without a saved comparison an old run offers one rather than loading models unasked.
    (folder / after_run.SAMPLES_FILE).unlink()
    page.open_run_folder(folder)
    qtbot.waitUntil(lambda: page.worker is None, timeout=30000)
    assert view.compare_button.isVisible() and view.task is None and view.comparison is None
