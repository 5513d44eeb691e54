"""Hub downloads in the app: the Chat page's Load and the Model page's Download show a
bar moving with the bytes and a Cancel that stops the download at once; the next try
fetches only the rest. Against a fake hub on loopback (tests/fake_hub.py): no network."""

import pytest

from studio.core import hub
from studio.gui import workers
from studio.gui.state import AppState
from tests.fake_hub import FakeHub, serving_hub

REPO = "tiny/llama"


@pytest.fixture
def served(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(hub, "REPORT_EVERY_S", 0.0)
    with serving_hub(FakeHub(REPO, tiny_model), monkeypatch, tmp_path / "hf-cache") as fake:
        # The weights in 16 KB pieces 50 ms apart: about 1.7 s, time to see them and cancel.
        fake.slow = ("model.safetensors", 16 * 1024, 0.05)
        yield fake


def _moving(qtbot, bar, text_of) -> list[int]:
    """The bar's values until it has moved twice within the weights file."""
    values = []

    def moved():
        if "model.safetensors" in text_of() and bar.isVisible():
            values.append(bar.value())
        return len(set(v for v in values if v > 0)) >= 2

    qtbot.waitUntil(moved, timeout=10000)
    return values


def test_chat_load_of_a_hub_id_shows_the_bytes_and_cancel_stops_it(qtbot, served):
    from studio.gui.pages.chat import ChatPage

    page = ChatPage(AppState())
    qtbot.addWidget(page)
    page.show()
    picker = page.pickers[0]
    picker.model_edit.setText(REPO)
    assert not picker.cancel_button.isVisible()
    picker.load_button.click()

    values = _moving(qtbot, picker.progress, picker.status.text)
    assert values == sorted(values) and values[-1] < 1000
    assert picker.cancel_button.isVisible()
    assert " of " in picker.status.text() and "KB" in picker.status.text()

    picker.cancel_button.click()
    assert "Download cancelled" in picker.status.text()
    assert not picker.cancel_button.isVisible() and not picker.progress.isVisible()
    assert picker.load_button.isEnabled() and 0 not in page.loading
    # The worker ends within a chunk or two, not after the whole file.
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=1500)
    assert 0 not in page.models
    assert hub.cached_snapshot(REPO) is None

    served.slow = None
    with qtbot.waitSignal(page.model_loaded, timeout=60000):
        picker.load_button.click()
    assert page.models[0].base_path == REPO
    assert served.gets("config.json") == 1  # fetched once: kept through the cancel
    assert served.gets("model.safetensors") == 2
    page.shutdown()


def test_model_page_download_shows_the_bytes_cancels_and_resumes(qtbot, served):
    from studio.gui.pages.model import ModelPage

    page = ModelPage(AppState())
    qtbot.addWidget(page)
    page.show()
    page.source.setText(REPO)
    page.download_button.click()
    assert page.download_cancel.isVisible() and not page.download_button.isEnabled()
    assert page.state.job == f"Downloading {REPO}"  # the status bar says it

    values = _moving(qtbot, page.download_bar, page.download_label.text)
    assert values == sorted(values) and values[-1] < 1000
    page.download_cancel.click()
    assert "Download cancelled" in page.download_label.text()
    assert page.download_button.isEnabled() and not page.download_cancel.isVisible()
    assert page.state.job == ""
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=1500)

    served.slow = None
    with qtbot.waitSignal(page.loaded, timeout=30000) as shown:
        page.download_button.click()
    assert shown.args[0].source == REPO and shown.args[0].architecture == "LlamaForCausalLM"
    assert page.download_label.text().startswith("Downloaded to ")
    assert not page.download_bar.isVisible() and not page.error.isVisible()
    assert served.gets("tokenizer.json") == 1 and served.gets("model.safetensors") == 2


def test_model_page_download_of_a_folder_says_what_to_give(qtbot, tmp_path):
    from studio.gui.pages.model import ModelPage

    page = ModelPage(AppState())
    qtbot.addWidget(page)
    page.show()
    page.source.setText(str(tmp_path))
    page.download_button.click()
    assert page.error.isVisible() and "hub id" in page.error.text()
    assert not page.download_bar.isVisible()


def test_train_and_evaluate_pages_show_a_download_in_bytes(window, tmp_path):
    from studio.core import runs

    gb = 1024**3
    event = {"type": "progress", "done": 3 * gb, "total": 6 * gb,
             "stage": "download org/big: model-00001-of-00002.safetensors"}  # fmt: skip
    page = window.pages["Train"]
    page.run_state = runs.RunState(folder=tmp_path)
    page._events_read([{"type": "log", "message": "downloading org/big from the hub"}, event])
    # Past 2 GB a byte count overflows the bar's int: it counts per mille.
    assert (page.progress.maximum(), page.progress.value()) == (1000, 500)
    assert page.progress_text.text() == (
        "Downloading org/big: model-00001-of-00002.safetensors, 3.0 GB of 6.0 GB (50%)"
    )
    page._events_read([{"type": "start", "total_steps": 40, "run_dir": str(tmp_path)}])
    assert (page.progress.maximum(), page.progress.value()) == (40, 0)

    evaluate = window.pages["Evaluate"]
    evaluate._event(event)
    assert (evaluate.progress.maximum(), evaluate.progress.value()) == (1000, 500)
    assert "3.0 GB of 6.0 GB (50%)" in evaluate.stage_label.text()
