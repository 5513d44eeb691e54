"""Render a screenshot of every page of the app, from the demo project.

    python packaging/screenshots.py docs/screenshots

Runs offscreen (no display needed) with a throw-away STUDIO_HOME, so it never touches your
settings. Writes home.png, data.png, data-skipped.png, model.png, train.png (during a real
demo run), train-failed.png, train-history.png, train-finished.png (base vs tuned answers
after the run), chat.png, chat-suggestions.png, export.png (after a real export of the demo
run), the wizard's steps (wizard-1-data.png ... wizard-4-review.png), and the Data page's
tools (generate.png, dedupe.png) into OUTDIR.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

SIZE = (1280, 820)


def wait_until(app, condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the app did not get ready in time")
        app.processEvents()
        time.sleep(0.02)


def main(out_dir: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["STUDIO_HOME"] = tempfile.mkdtemp(prefix="studio-shots-")
    from PySide6.QtWidgets import QApplication

    from studio.core import paths
    from studio.gui import theme, workers
    from studio.gui.main_window import MainWindow

    if not paths.demo_available():
        print(f"error: the demo is missing from {paths.demo_dir()}", file=sys.stderr)
        return 2
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    theme.apply_scheme(app)
    window = MainWindow(probe=False)
    window.resize(*SIZE)
    window.show()
    window.state.set_device("CPU", 16 * 1024**3, False)
    window.open_demo()
    data = window.pages["Data"]
    wait_until(
        app, lambda: window.state.dataset is not None and window.state.model_info is not None
    )
    wait_until(app, lambda: data.tokenized is not None)
    data.records_view.selectRow(0)
    wait_until(app, lambda: data._render_task is None and "tokens" in data.legend.text())

    def shot(widget, name: str) -> None:
        app.processEvents()
        path = out / f"{name}.png"
        widget.grab().save(str(path))
        print(path)

    for name in window.pages:
        if name != "Chat":  # chat.png comes at the end, with answers from a trained run
            window.show_page(name)
            shot(window, name.lower())

    window.new_fine_tune()
    wizard = window.wizard
    wizard.resize(900, 680)
    names = ["1-data", "2-model", "3-settings", "4-review"]
    for i, step in enumerate(wizard.steps[:4]):
        wait_until(app, lambda s=step: s.isComplete())
        if i == 2:
            step.advanced_button.setChecked(True)
        shot(wizard, f"wizard-{names[i]}")
        if i < 3:
            wizard.next()
    wizard.reject()
    # The validation panel: the demo data with two broken lines added.
    lines = Path(paths.demo_dir() / "data.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    lines[6] = '{"messages": [{"role": "user", "content": "Hi"}'
    lines[17] = '{"messages": [{"role": "user", "content": "No answer here"}]}'
    broken = Path(os.environ["STUDIO_HOME"]) / "with-problems.jsonl"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    window.show_page("Data")
    data.import_file(str(broken))
    wait_until(app, lambda: data._load_task is None and data._tok_task is None)
    data.tabs.setCurrentIndex(1)
    data.problems_view.selectRow(0)
    shot(window, "data-skipped")

    data_tool_shots(app, window, shot)
    try:
        train_shots(app, window, shot)
        chat_shot(app, window, shot)
        finished_shots(app, window, shot, window.state.project.runs_dir / "demo-r16")
        export_shot(app, window, shot)
    finally:
        window.pages["Export"].shutdown()  # a timeout: do not leave an export behind
        train = window.pages["Train"]
        if train.is_running():  # a timeout: do not leave a training process behind
            train.run.kill()
            wait_until(app, lambda: train.worker is None)
    window.close()
    workers.wait_all()
    return 0


def data_tool_shots(app, window, shot) -> None:
    """The Data page's tools on the demo: generate.png (the demo model answering prompts, the
    rows reviewed as they came) and dedupe.png (copies found in the demo data)."""
    import json

    from studio.core import paths

    demo = paths.demo_dir()
    records = [
        json.loads(x) for x in (demo / "data.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    questions = [r["messages"][0]["content"] for r in records if r["messages"][0]["role"] == "user"]
    prompts = Path(os.environ["STUDIO_HOME"]) / "questions.jsonl"
    rows = [{"prompt": q} for q in questions[:: max(1, len(questions) // 8)][:8]]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = window.pages["Data"]
    window.show_page("Data")
    dialog = data.open_generate()
    try:
        dialog.resize(1280, 760)
        dialog.input_edit.setText(str(prompts))
        dialog.picker.model_edit.setText(str(demo / "model"))
        dialog.mode_box.setCurrentIndex(dialog.mode_box.findData("answer"))
        dialog.max_tokens.setValue(32)
        dialog.batch_size.setValue(1)
        done = []
        dialog.finished_run.connect(done.append)
        dialog.generate_button.click()
        wait_until(app, lambda: done)
        dialog.preview.select(0)
        dialog.preview.mark("accepted")
        dialog.preview.select(2)
        dialog.preview.mark("rejected")
        dialog.preview.select(1)
        shot(dialog, "generate")
    finally:
        dialog.shutdown()
        dialog.close()
    dialog = data.open_dedupe()
    dialog.resize(1280, 760)
    dialog.file_edit.setText(str(demo / "data.jsonl"))
    found = []
    dialog.found.connect(lambda: found.append(True))
    dialog.find_button.click()
    wait_until(app, lambda: found)
    if dialog.tree.topLevelItemCount():
        group = dialog.tree.topLevelItem(0)
        group.setExpanded(True)
        dialog.tree.setCurrentItem(group.child(1) or group)
    shot(dialog, "dedupe")
    dialog.close()


def train_shots(app, window, shot) -> None:
    """The Train page during a real demo run, with a failure (a run killed mid-way) and with
    the history overlaying both runs' losses: train.png, train-failed.png, train-history.png."""
    import dataclasses
    import os
    import signal

    from studio.core import paths

    cfg = window.state.config
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            cfg.train, max_steps=0, epochs=6, batch_size=4, seq_len=256, lr=1e-3,
            eval_every=10, save_every=20,
        ),
        data=dataclasses.replace(
            cfg.data, path=str(paths.demo_dir() / "data.jsonl"), format="auto", val_split=0.1
        ),
        lora=dataclasses.replace(cfg.lora, r=16, lora_alpha=32),
    )  # fmt: skip
    page = window.pages["Train"]
    runs_dir = window.state.project.runs_dir
    window.show_page("Train")
    page.start_run(cfg, runs_dir / "demo-r16")

    def halfway() -> bool:
        return page.run_state.step >= 0.6 * max(1, page.run_state.total_steps) > 1

    wait_until(app, halfway, timeout=600)
    shot(window, "train")
    wait_until(app, lambda: page.worker is None, timeout=600)
    page.start_run(
        dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, r=4, lora_alpha=8)),
        runs_dir / "demo-r4",
    )
    wait_until(app, halfway, timeout=600)
    os.kill(page.run.pid, signal.SIGKILL)
    wait_until(app, lambda: page.worker is None)
    shot(window, "train-failed")
    page.tabs.setCurrentIndex(1)
    wait_until(app, lambda: page.history.table.rowCount() == 2)
    page.history.select(["demo-r16", "demo-r4"])
    wait_until(
        app, lambda: page.history.compare is not None and len(page.history.compare.names) == 2
    )
    shot(window, "train-history")


def chat_shot(app, window, shot) -> None:
    """chat.png: compare mode, the demo base model against the demo-r16 run's adapter, both
    answering the same question greedily."""
    page = window.pages["Chat"]
    window.show_page("Chat")
    page.compare_box.setChecked(True)
    page.pickers[1].set_adapter(str(window.state.project.runs_dir / "demo-r16" / "adapter"))
    page.temperature.setValue(0)
    page.max_tokens.setValue(40)
    for slot in (0, 1):
        page.pickers[slot].load_button.click()
        wait_until(app, lambda s=slot: s in page.models, timeout=120)
    finished = []
    page.generation_finished.connect(lambda: finished.append(1))
    page.input.setPlainText("What is the capital of Peru?")
    page.send_button.click()
    wait_until(app, lambda: finished, timeout=120)
    shot(window, "chat")


def export_shot(app, window, shot) -> None:
    """export.png (replacing the one of the page before any run): the demo-r16 run exported
    as GGUF Q8_0 from the page, checked in llama.cpp when that works here."""
    page = window.pages["Export"]
    window.show_page("Export")
    run = str(window.state.project.runs_dir / "demo-r16")
    page.select_run(run)
    wait_until(app, lambda: page.facts is not None and page.facts.folder == run)
    page.set_target("gguf")
    page.set_type("q8_0")
    ended = []
    page.export_finished.connect(ended.append)
    page.replace_box.setChecked(True)
    for verify in (True, False):  # without llama-cpp-python (or if the check fails) no check
        page.verify_box.setChecked(verify and page.verify_box.isEnabled())
        ended.clear()
        page.start_export()
        wait_until(app, lambda: ended, timeout=600)
        if ended[0] == "completed":
            break
    shot(window, "export")


def finished_shots(app, window, shot, run_dir) -> None:
    """train-finished.png: a finished run with the base's and the tuned model's answers side
    by side; chat-suggestions.png: "Chat with it" from there, with prompts from the data."""
    page = window.pages["Train"]
    window.statusBar().clearMessage()  # the killed run's notice is not about this run
    window.show_page("Train")
    if page.run_dir != run_dir:
        page.open_run_folder(run_dir)
    wait_until(app, lambda: page.worker is None)
    if page.after_run.comparison is None and page.after_run.task is None:
        page.after_run.start()  # a later run started before this one's answers were in
    wait_until(app, lambda: page.after_run.comparison is not None, timeout=300)
    shot(window, "train-finished")
    page.after_run.chat_button.click()
    bar = window.pages["Chat"].suggestions
    wait_until(app, lambda: bar.source == str(run_dir) and bar.task is None and bar.buttons)
    shot(window, "chat-suggestions")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
