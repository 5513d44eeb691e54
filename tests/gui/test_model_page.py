"""The Model page: facts of the tiny model, the memory estimate, clear errors, the cache list."""

import dataclasses

from studio.core.model_info import GB, human_bytes


def test_model_page_shows_facts_and_estimate(window, qtbot, tiny_model):
    page = window.pages["Model"]
    window.show_page("Model")
    qtbot.waitUntil(
        lambda: page.cache.count() > 0 and "Looking" not in page.cache.itemText(0), timeout=30000
    )
    assert "No models" in page.cache.itemText(0) or page.cache.isEnabled()
    page.source.setText(str(tiny_model))
    page.load()
    assert page.busy.isVisible()  # reading runs off the GUI thread
    qtbot.waitUntil(lambda: window.state.model_info is not None, timeout=60000)
    assert not page.busy.isVisible()
    f = page.fields
    assert f["Architecture"].text().startswith("LlamaForCausalLM")
    assert "0.1 M" in f["Parameters"].text() and "2 layers" in f["Parameters"].text()
    assert f["Context length"].text() == "1,024 tokens"
    assert f["Chat template"].text().startswith("yes")
    assert (
        f["LoRA targets"].text() == "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
    )
    est = page.memory.estimate
    assert (
        est is not None and est.lora_params == 16 * 1024 * 2
    )  # r * sum(in + out) over 7 linears * 2 layers
    assert page.memory.values["Total"].text() == f"<b>{human_bytes(est.total)}</b>"
    assert window.state.config.model.path == str(tiny_model)
    # The estimate follows the device and the settings.
    window.state.set_device("Tiny GPU", 1024, True)
    assert page.memory.verdict.text().startswith("Will not fit on Tiny GPU")
    window.state.set_device("Big GPU", 80 * GB, True)
    assert page.memory.verdict.text() == "Fits on Big GPU (80.0 GB)."
    # ...and the settings: a bigger batch needs more activation memory.
    before = page.memory.estimate.activations
    cfg = window.state.config
    window.state.update_config(
        train=dataclasses.replace(cfg.train, batch_size=cfg.train.batch_size * 2)
    )
    assert page.memory.estimate.activations > before


def test_model_page_errors_are_clear(window, qtbot, tmp_path):
    page = window.pages["Model"]
    window.show_page("Model")
    page.source.setText("someone/not-downloaded")
    page.load()
    qtbot.waitUntil(lambda: page._task is None, timeout=30000)
    assert page.error.isVisible() and "not in the local Hugging Face cache" in page.error.text()
    page.load(allow_network=True)  # no network here: the failure is shown, not raised
    qtbot.waitUntil(lambda: page._task is None, timeout=60000)
    assert "Could not fetch someone/not-downloaded" in page.error.text()
    page.source.setText(str(tmp_path))
    page.load()
    qtbot.waitUntil(lambda: page._task is None, timeout=30000)
    assert "no config.json" in page.error.text()
    assert window.state.model_info is None


def test_model_page_follows_the_state_and_starts_clean_in_another_project(
    window, qtbot, tiny_model, tmp_path
):
    from studio.core.model_info import read_model_info
    from studio.core.project import create_project

    page = window.pages["Model"]
    info = read_model_info(str(tiny_model))
    window.state.set_model(info)  # as the wizard does
    assert page.source.text() == info.source and page.fields["Architecture"].text() != "—"
    window.state.set_project(create_project("no model", tmp_path))
    assert window.state.model_info is None
    assert page.source.text() == "" and page.fields["Architecture"].text() == "—"
    assert page.memory.estimate is None
