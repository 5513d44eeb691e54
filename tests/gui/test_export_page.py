"""The Export page: real `studio export` children driven from the page (a merged Hugging Face
folder end to end, a refused export then a replace, Cancel), which run it picks, and the size
and quality note shown for each type."""

import json
import os
import signal

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from studio.core import runs
from studio.core.export.options import BITS_PER_WEIGHT, GGUF_QUANTS, K_QUANTS, QUALITY
from studio.core.export.pipeline import human
from studio.core.model_info import read_model_info
from studio.core.project import create_project
from tests.export_runs import make_run

EXPORT_TIMEOUT = 120000


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("base") / "m")


@pytest.fixture(scope="module")
def big_base(tmp_path_factory):
    """~100 MB in fp32: merging and writing it takes long enough to stop it in the act."""
    from studio.core.tiny import build_model

    return build_model(
        tmp_path_factory.mktemp("big") / "m", hidden_size=512, layers=8, intermediate_size=1408
    )


@pytest.fixture
def project(studio_home):
    return create_project("Exports", studio_home / "projects")


@pytest.fixture
def page(window):
    page = window.pages["Export"]
    yield page
    if page.job is not None:  # a failed test leaves no export process behind
        page.job.stop_and_wait()


def add_run(project, base_model, name="run", status="completed", started=1000.0):
    """A run folder with an adapter; its events say how training ended."""
    run = make_run(project.runs_dir, base_model, name=name)
    events = [{"type": "start", "time": started, "total_steps": 10}]
    if status == "completed":
        events.append({"type": "done", "step": 10, "status": "completed", "final_loss": 0.5})
    else:
        events.append({"type": "error", "message": "boom", "kind": "error"})
    (run / runs.EVENTS_FILE).write_text(
        "".join(json.dumps(e) + "\n" for e in events), encoding="utf-8"
    )
    return run


def open_project(qtbot, window, project, run):
    window.state.set_project(project)
    window.show_page("Export")
    page = window.pages["Export"]
    qtbot.waitUntil(lambda: page.facts is not None and page.facts.folder == str(run), timeout=30000)
    return page


def export(qtbot, page) -> str:
    with qtbot.waitSignal(page.export_finished, timeout=EXPORT_TIMEOUT) as blocker:
        assert page.start_export()
    return blocker.args[0]


def test_merged_folder_end_to_end(qtbot, window, page, project, base_model, monkeypatch):
    run = add_run(project, base_model)
    open_project(qtbot, window, project, run)
    page.set_target("hf")
    out = run / "exports" / "hf-float32"
    assert page.type_key() == "auto" and page.output_edit.text() == str(out)
    assert page.command_view.toPlainText() == f"studio export --adapter {run} --to hf"
    assert page.result.isHidden()

    with qtbot.waitSignal(page.export_finished, timeout=EXPORT_TIMEOUT) as blocker:
        assert page.start_export()
        assert page.is_running() and not page.start_export()  # one export at a time
        assert not page.export_button.isEnabled() and page.cancel_button.isEnabled()
        assert not page.form.isEnabled() and window.state.job == "Exporting run"
    assert blocker.args == ["completed"]

    report = json.loads((out / "export.json").read_text(encoding="utf-8"))
    rows = page.result.file_rows()
    assert rows == [(f["name"], human(f["bytes"])) for f in report["files"]]
    on_disk = {p.name: p.stat().st_size for p in out.iterdir()}
    assert {name for name, _ in rows} == set(on_disk) - {"export.json"}
    assert all(on_disk[f["name"]] == f["bytes"] for f in report["files"])
    assert "model.safetensors" in on_disk and "config.json" in on_disk
    total = sum(f["bytes"] for f in report["files"])
    assert page.result.total_label.text() == f"{len(rows)} files, {human(total)}"
    commands = page.result.commands_view.toPlainText()
    assert f"AutoModelForCausalLM.from_pretrained({str(out)!r})" in commands
    assert page.result.verify_label.isHidden()  # a merged folder has nothing to check
    assert page.stage_label.text() == f"Exported to {out}"
    assert page.progress.value() == page.progress.maximum()
    assert "wrote 6 files" in page.log.toPlainText()
    assert page.export_button.isEnabled() and page.form.isEnabled()
    assert not page.cancel_button.isEnabled() and window.state.job == ""

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    assert page.result.open_button.isEnabled()
    page.result.open_button.click()
    assert opened == [str(out)]


def test_refused_export_then_replace(qtbot, window, page, project, base_model, tmp_path):
    run = add_run(project, base_model)
    open_project(qtbot, window, project, run)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.txt").write_text("keep me", encoding="utf-8")
    page.set_target("hf")
    page.output_edit.setText(str(taken))
    assert page.command_view.toPlainText().endswith(f"--to hf --output {taken}")

    assert export(qtbot, page) == "failed"
    text = page.message.text()
    assert not page.message.isHidden() and "already holds files" in text
    assert "\n" not in text and "Traceback" not in text
    assert page.stage_label.text() == "Export failed."
    assert (taken / "old.txt").read_text(encoding="utf-8") == "keep me"
    assert page.result.isHidden() and page.export_button.isEnabled() and page.form.isEnabled()

    # Usable again: the same export with Replace goes through and replaces the folder.
    page.replace_box.setChecked(True)
    assert page.command_view.toPlainText().endswith("--overwrite")
    assert export(qtbot, page) == "completed"
    assert not (taken / "old.txt").exists() and (taken / "model.safetensors").is_file()
    assert (
        page.message.isHidden()
        and ("model.safetensors", human((taken / "model.safetensors").stat().st_size))
        in page.result.file_rows()
    )


def test_cancel_leaves_no_output(qtbot, window, page, project, big_base):
    run = add_run(project, big_base)
    open_project(qtbot, window, project, run)
    page.set_target("hf")
    out = run / "exports" / "hf-float32"
    # The first progress event comes as the merge starts (a plain LoRA is merged as the
    # files are written): the child's SIGTERM handler is in place by then.
    stages = []
    page.progressed.connect(lambda done, total, stage: (stages.append(stage), page.cancel()))
    assert export(qtbot, page) == "stopped"
    assert stages[0] == "writing"
    assert not out.exists()
    exports = run / "exports"
    assert not exports.exists() or not any(exports.iterdir())  # no .tmp-hf-float32 either
    assert page.message.text() == "Export cancelled; nothing was written."
    assert page.stage_label.text() == "Export cancelled."
    assert "export cancelled" in page.log.toPlainText()
    assert page.job is None and page.export_button.isEnabled() and page.result.isHidden()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_killed_export_is_one_message(qtbot, window, page, project, big_base):
    run = add_run(project, big_base)
    open_project(qtbot, window, project, run)
    page.set_target("hf")
    killed = []

    def kill(*_args):  # once: a segfault or the out-of-memory killer, as the page sees it
        pid = page.job.process.processId() if page.job is not None else 0
        if not killed and pid > 0:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    page.progressed.connect(kill)
    assert export(qtbot, page) == "failed" and killed
    assert page.message.text() == (
        "The export process crashed (signal 9) while merging the adapter and writing the files; "
        "nothing was written. The log says more."
    )
    assert not (run / "exports" / "hf-float32").exists()
    assert page.job is None and page.export_button.isEnabled() and page.form.isEnabled()


def test_default_run_and_type_sizes(qtbot, window, page, project, base_model):
    finished = add_run(project, base_model, name="a-finished", started=1000.0)
    add_run(project, base_model, name="b-failed", status="failed", started=2000.0)
    (project.runs_dir / "c-no-adapter").mkdir()
    (project.runs_dir / "c-no-adapter" / "run.yaml").write_text(
        (finished / "run.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    open_project(qtbot, window, project, finished)
    # The latest *finished* run is the default, though a failed one is newer.
    labels = [page.run_box.itemText(i) for i in range(page.run_box.count())]
    assert labels == [
        "b-failed (failed)",
        "a-finished (completed, loss 0.500)",
        "Other folder…",
    ]
    assert page.adapter() == str(finished)
    n = read_model_info(str(base_model)).num_params
    assert page.facts.num_params == n > 0
    assert f"{n:,} parameters" in page.base_label.text()

    page.set_target("gguf")
    sizes = page.type_sizes()
    assert sorted(sizes) == sorted(GGUF_QUANTS)
    assert list(sizes) == sorted(GGUF_QUANTS, key=lambda q: -BITS_PER_WEIGHT[q])
    for q, size in sizes.items():
        assert size == int(n * BITS_PER_WEIGHT[q] / 8)
        assert size / sizes["f16"] == pytest.approx(BITS_PER_WEIGHT[q] / 16, rel=1e-3)
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"] < sizes["f32"]
    items = page.type_list.items()
    assert items["q8_0"].text(1) == human(sizes["q8_0"])
    assert items["q8_0"].text(2) == QUALITY["q8_0"]
    assert page.type_key() == "f16"
    assert page.output_edit.text() == str(finished / "exports" / "gguf-f16")
    page.set_type("q8_0")
    assert page.output_edit.text() == str(finished / "exports" / "gguf-q8_0")
    assert "--to gguf --quant q8_0" in page.command_view.toPlainText()

    # Without llama-cpp-python the K-quants are listed, greyed out, with how to get them.
    page.llama_ok = False
    page.set_target("ollama")
    items = page.type_list.items()
    for q in K_QUANTS:
        assert not items[q].flags() & Qt.ItemFlag.ItemIsEnabled
        assert items[q].text(2) == 'needs llama-cpp-python: pip install "studio[gguf]"'
    assert items["q8_0"].flags() & Qt.ItemFlag.ItemIsEnabled
    assert page.type_key() == "q8_0"  # the choice carries over between GGUF and Ollama
    assert not page.verify_box.isEnabled() and "needs llama-cpp-python" in page.verify_box.text()
    assert not page.verify_box.isChecked()
    # Not --no-verify: the export itself then says why the GGUF was not checked.
    assert page.command_view.toPlainText().endswith("--to ollama --quant q8_0")

    # A merged folder is sized by dtype; a LoRA GGUF by the adapter alone.
    page.set_target("hf")
    assert page.verify_box.isHidden()  # nothing to check in a merged folder
    hf = page.type_sizes()
    assert hf == {"auto": n * 4, "float16": n * 2, "bfloat16": n * 2, "float32": n * 4}
    page.set_target("lora-gguf")
    lora = page.type_sizes()
    assert 0 < lora["f16"] < sizes["q4_0"] and lora["f32"] == pytest.approx(2 * lora["f16"], abs=1)

    # Another project: nothing of this one's runs stays chosen.
    window.state.set_project(create_project("Empty", project.folder.parent))
    qtbot.waitUntil(lambda: page.run_box.itemText(0).startswith("No run"), timeout=10000)
    assert page.adapter() == "" and page.facts is None and not page.export_button.isEnabled()


def test_onnx_needs_its_extra(qtbot, monkeypatch):
    from studio.gui import export_job
    from studio.gui.pages.export import ExportPage
    from studio.gui.state import AppState

    monkeypatch.setattr(export_job, "onnx_installed", lambda: False)
    page = ExportPage(AppState())
    qtbot.addWidget(page)
    button = page.target_buttons["onnx"]
    assert not button.isEnabled() and 'pip install "studio[onnx]"' in button.text()
    assert page.target_buttons["gguf"].isChecked() and not page.export_button.isEnabled()
    assert page.run_box.itemText(0) == "No run with an adapter yet: train one first"
