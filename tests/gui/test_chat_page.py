"""The Chat page: streamed replies, Stop within a second, compare mode, multi-turn,
regenerate, copy, the project's runs listed as adapters, and no torch at import."""

import subprocess
import sys
import time

import pytest
from PySide6.QtWidgets import QApplication

from studio.core.generation import GenerationSettings
from studio.core.infer import load_chat_model
from studio.gui.pages.chat import ChatPage
from studio.gui.state import AppState


def make_run(base, run_dir):
    """A run folder with a random non-zero LoRA adapter and a checkpoint (seconds, no training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.core.config import DataConfig, ModelConfig, RunConfig

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(50)
    peft.save_pretrained(run_dir / "adapter")
    peft.save_pretrained(run_dir / "checkpoints" / "step-000002")
    cfg = RunConfig(
        model=ModelConfig(path=str(base)), data=DataConfig(path="d.jsonl"), output=str(run_dir)
    )
    cfg.save(run_dir / "run.yaml")
    return run_dir


@pytest.fixture
def page(qtbot, tiny_model):
    p = ChatPage(AppState())
    qtbot.addWidget(p)
    p.show()
    p.pickers[0].model_edit.setText(str(tiny_model))
    p.temperature.setValue(0)
    p.max_tokens.setValue(24)
    yield p
    p.shutdown()


def load(qtbot, page, slot=0):
    with qtbot.waitSignal(page.model_loaded, timeout=60000):
        page.pickers[slot].load_button.click()
    assert slot in page.models


def say(qtbot, page, text, timeout=60000):
    page.input.setPlainText(text)
    with qtbot.waitSignal(page.generation_finished, timeout=timeout):
        page.send_button.click()


def test_streamed_reply_arrives(qtbot, page, tiny_model):
    load(qtbot, page)
    page.max_tokens.setValue(60)
    deliveries = []
    real = page.panes[0].append
    page.panes[0].append = lambda text: (deliveries.append(text), real(text))
    say(qtbot, page, "Hello, how are you today?")
    expected = load_chat_model(str(tiny_model)).chat(
        [{"role": "user", "content": "Hello, how are you today?"}],
        GenerationSettings(temperature=0, max_new_tokens=60),
    )
    text = "".join(expected)
    assert "".join(deliveries) == text
    assert page.histories[0][-1] == {"role": "assistant", "content": text}
    assert text in page.panes[0].transcript.toPlainText()
    assert "tokens/s" in page.panes[0].stats.text()
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()


def test_stop_ends_generation_within_a_second(qtbot, page):
    load(qtbot, page)
    page.models[0].stop_ids = set()  # never stop on EOS: only the context (1024) ends it
    page.temperature.setValue(1.0)
    page.max_tokens.setValue(32768)
    page.input.setPlainText("Tell me a long story.")
    ended = []
    page.answer_finished.connect(lambda slot, stats: ended.append(stats))
    first = []
    page.panes[0].append = (lambda real: lambda text: (first.append(text), real(text)))(
        page.panes[0].append
    )
    page.send_button.click()
    qtbot.waitUntil(lambda: bool(first), timeout=30000)
    assert page.is_generating() and page.stop_button.isEnabled()
    start = time.monotonic()
    with qtbot.waitSignal(page.generation_finished, timeout=1000):
        page.stop_button.click()
    assert time.monotonic() - start < 1.0
    assert ended[0]["finish_reason"] == "cancelled"  # stopped, not run to the end of the context
    answer = page.histories[0][-1]
    assert answer["role"] == "assistant" and answer["content"]  # what was written stays
    assert "stopped" in page.panes[0].stats.text()


def test_compare_mode_shows_two_answers(qtbot, page, tiny_model, tmp_path):
    run = make_run(tiny_model, tmp_path / "tuned-run")
    page.compare_box.setChecked(True)
    assert page.pickers[1].isVisible() and page.panes[1].isVisible()
    page.pickers[1].model_edit.setText(str(tiny_model))
    page.pickers[1].set_adapter(str(run / "adapter"))
    load(qtbot, page, 0)
    load(qtbot, page, 1)
    for model in page.models.values():
        model.stop_ids = set()  # a random model may end at once; make both write max_tokens
    finished = []
    page.answer_finished.connect(lambda slot, stats: finished.append(slot))
    say(qtbot, page, "Hello, how are you today?")
    assert sorted(finished) == [0, 1]
    a, b = page.histories[0][-1]["content"], page.histories[1][-1]["content"]
    assert a and b and a != b  # base and fine-tuned answer differently
    assert (
        a in page.panes[0].transcript.toPlainText() and b in page.panes[1].transcript.toPlainText()
    )
    assert page.panes[1].title.text() == "tuned-run"
    assert all("tokens/s" in p.stats.text() for p in page.panes)
    # One copy of the base model's weights serves both panes, and the base pane still
    # answers exactly as the base model alone does.
    assert page.models[0].shared is page.models[1].shared
    alone = load_chat_model(str(tiny_model))
    alone.stop_ids = set()
    settings = GenerationSettings(temperature=0, max_new_tokens=24)
    assert (
        "".join(alone.chat([{"role": "user", "content": "Hello, how are you today?"}], settings))
        == a
    )


def test_compare_send_loads_both_one_after_the_other_sharing_the_base(
    qtbot, page, tiny_model, tmp_path
):
    run = make_run(tiny_model, tmp_path / "tuned-run")
    page.compare_box.setChecked(True)
    page.pickers[1].set_adapter(str(run / "adapter"))  # its base comes from run.yaml
    loaded = []
    page.model_loaded.connect(loaded.append)
    say(qtbot, page, "Hi there")
    assert loaded == [0, 1]
    assert "one copy of the base weights" in page.pickers[1].status.text()
    assert page.models[0].shared is page.models[1].shared
    assert page.histories[0][-1]["role"] == page.histories[1][-1]["role"] == "assistant"


def test_multi_turn_system_regenerate_copy_and_reset(qtbot, page):
    load(qtbot, page)
    page.system_edit.setText("Be brief.")
    say(qtbot, page, "Hello!")
    say(qtbot, page, "What is two plus two?")
    roles = [m["role"] for m in page.histories[0]]
    assert roles == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]  # the system prompt is added per request
    last = page.histories[0][-1]["content"]
    with qtbot.waitSignal(page.generation_finished, timeout=60000):
        page.regenerate_button.click()
    assert (
        len(page.histories[0]) == 4 and page.histories[0][-1]["content"] == last
    )  # greedy: same again
    page.copy_answer(0)
    assert QApplication.clipboard().text() == last
    page.reset_button.click()
    assert page.histories[0] == [] and page.panes[0].transcript.toPlainText() == ""


def test_send_loads_the_model_first_and_bad_model_is_reported(qtbot, page, tmp_path):
    say(qtbot, page, "Hello!")  # no Load click: Send loads, then answers
    assert 0 in page.models and page.histories[0][-1]["role"] == "assistant"
    page.reset()
    page.pickers[0].model_edit.setText(str(tmp_path / "missing"))
    page.pickers[0].load_button.click()
    qtbot.waitUntil(lambda: not page.loading, timeout=30000)
    assert "no such folder" in page.pickers[0].status.text()


def test_project_runs_are_offered_as_adapters(qtbot, tiny_model, tmp_path):
    from studio.core.project import create_project

    project = create_project("Chatty", tmp_path)
    make_run(tiny_model, project.runs_dir / "run-1")
    state = AppState()
    page = ChatPage(state)
    qtbot.addWidget(page)
    state.set_project(project)
    box = page.pickers[0].adapter_box
    labels = [box.itemText(i) for i in range(box.count())]
    assert "run-1 (final adapter)" in labels and "run-1 / step-000002" in labels
    box.setCurrentIndex(labels.index("run-1 / step-000002"))
    page.pickers[0]._adapter_chosen(box.currentIndex())
    assert page.pickers[0].model_edit.text() == str(tiny_model)  # the run's base model
    assert page.pickers[0].choice().adapter.endswith("step-000002")


def test_chat_page_does_not_import_torch():
    code = "import sys, studio.gui.pages.chat; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False False", out.stderr


def test_stop_in_compare_mode_settles_both_sides(qtbot, page, tiny_model):
    load(qtbot, page, 0)
    say(qtbot, page, "Hello there")  # one turn on A alone
    page.compare_box.setChecked(True)
    # B carries on from A's conversation.
    assert page.histories[1] == page.histories[0] and len(page.histories[1]) == 2
    page.pickers[1].model_edit.setText(str(tiny_model))
    with qtbot.waitSignal(page.model_loaded, timeout=60000):
        page.pickers[1].load_button.click()
        # One load at a time: both Load buttons wait while one side loads.
        assert not page.pickers[0].load_button.isEnabled()
    page.models[0].stop_ids = set()
    page.max_tokens.setValue(32768)
    page.temperature.setValue(1.0)
    first = []
    real = page.panes[0].append
    page.panes[0].append = lambda text: (first.append(text), real(text))
    page.input.setPlainText("Tell me a long story.")
    page.send_button.click()
    qtbot.waitUntil(lambda: bool(first), timeout=30000)
    with qtbot.waitSignal(page.generation_finished, timeout=5000):
        page.stop_button.click()
    # A keeps what it wrote; B, never started, is settled too: not stuck on "Generating…".
    assert page.histories[0][-1]["role"] == "assistant" and page.histories[0][-1]["content"]
    assert page.histories[1][-1] == {"role": "assistant", "content": ""}
    assert page.panes[1].stats.text() == "Stopped before answering."
    roles = [m["role"] for m in page.histories[1]]
    assert roles == ["user", "assistant", "user", "assistant"]  # turns still alternate


def test_message_comes_back_when_the_second_side_cannot_load(qtbot, page, tiny_model):
    page.compare_box.setChecked(True)
    page.pickers[1].model_edit.setText(str(tiny_model))
    page.input.setPlainText("Hi both")
    with qtbot.waitSignal(page.model_loaded, timeout=60000):
        page.send_button.click()
        page.pickers[1].model_edit.setText("")  # changed its mind while A loads
    qtbot.waitUntil(lambda: page.send_button.isEnabled(), timeout=5000)
    assert page.input.toPlainText() == "Hi both"
    assert page.histories[0] == [] and page.histories[1] == []
    assert "Choose a base model" in page.pickers[1].status.text()


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory):
    """A real run of two steps (seconds): run.yaml, a data file and 5 validation records."""
    from studio.core.train import run_training
    from tests.test_train import config, write_data

    root = tmp_path_factory.mktemp("quality")
    run_training(config(tiny_model, write_data(root / "data.jsonl"), root / "run", max_steps=2))
    return root / "run"


def test_compare_quality_measures_the_run_unquantized_in_8_and_4_bits(qtbot, page, trained_run):
    run = trained_run
    picker, check = page.pickers[0], page.pickers[0].quality
    assert not check.button.isEnabled() and "Choose a run's adapter" in check.button.toolTip()
    picker.set_adapter(str(run / "adapter"))
    assert check.button.isEnabled()
    values = []
    check.progress.valueChanged.connect(values.append)
    start = time.monotonic()
    check.button.click()
    assert time.monotonic() - start < 0.5  # measured on a worker thread
    assert check.busy and check.button.text() == "Cancel"
    assert not picker.load_button.isEnabled()  # one model load at a time
    qtbot.waitUntil(lambda: not check.busy, timeout=60000)
    text = check.label.text()
    assert text.startswith("Quality cost: 32-bit ppl ") and "8-bit" in text and "4-bit" in text
    assert "MB" in text and "5 validation examples" in check.label.toolTip()
    assert "Measured on this run" in picker.quant_box.toolTip()
    assert values and values[-1] == 15 and picker.load_button.isEnabled()
    # The figures belong to that run: another choice hides them, coming back shows them.
    picker.adapter_box.setCurrentIndex(0)
    assert check.label.text() == "" and not check.button.isEnabled()
    picker.set_adapter(str(run / "adapter"))
    assert check.label.text() == text


def test_a_message_sent_during_the_quality_check_is_answered_after_it(qtbot, page, trained_run):
    picker, check = page.pickers[0], page.pickers[0].quality
    picker.set_adapter(str(trained_run / "adapter"))
    check.button.click()
    page.input.setPlainText("Hello!")
    page.send_button.click()  # no model yet: it loads once the check is over
    assert "Waiting for the quality check" in picker.status.text() and not page.loading
    with qtbot.waitSignal(page.generation_finished, timeout=60000):
        check.button.click()  # Cancel
    assert check.label.text() == "" and check.button.text() == "Compare quality…"
    assert page.histories[0][-1]["role"] == "assistant"


def test_suggestions_from_the_data_and_a_hint_for_a_model_that_never_stops(
    qtbot, tiny_model, tmp_path, write_jsonl
):
    from studio.core.project import create_project

    data = write_jsonl("qa.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "A."}]}
        for q in ("What is 1 plus 2?", "What is 5 plus 5?", "Name a colour.", "Say hi & bye.")
    ])  # fmt: skip
    state = AppState()
    state.set_project(create_project("p", tmp_path, dataset=str(data), model=str(tiny_model)))
    page = ChatPage(state)
    qtbot.addWidget(page)
    page.show()
    bar = page.suggestions
    qtbot.waitUntil(lambda: bar.task is None and bar.isVisible(), timeout=30000)
    # One of each kind of question before a second of any.
    assert bar.prompts == [
        "What is 1 plus 2?",
        "Name a colour.",
        "Say hi & bye.",
        "What is 5 plus 5?",
    ]
    assert bar.buttons[2].text() == "Say hi && bye."  # "&" shown, not taken as a shortcut
    bar.buttons[2].click()
    assert page.input.toPlainText() == "Say hi & bye."

    # Chat with a run: its adapter (A) beside the base (B); answers cut at the limit twice.
    run = make_run(tiny_model, tmp_path / "runs" / "r1")
    page.open_run(run)
    assert page.compare_box.isChecked() and page.pickers[1].choice().adapter == ""
    assert page.pickers[0].choice() == page.pickers[1].choice().__class__(
        str(tiny_model), str(run / "adapter"), "none"
    )
    page.temperature.setValue(0)
    page.max_tokens.setValue(3)
    for text in ("Hello", "Again"):
        page.input.setPlainText(text)
        with qtbot.waitSignal(page.generation_finished, timeout=60000):
            page.send()
    assert page.hint.isVisible() and "r1 hit the token limit in 2 of 2" in page.hint.text()
    assert "train longer" in page.hint.text() and "chat template" in page.hint.text()
    page.shutdown()
