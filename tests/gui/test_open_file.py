"""`studio FILE.jsonl`: the app opens with the file imported on the Data page; and the app
carries the desktop entry's name and the icon."""

from pathlib import Path

from studio.gui.app import open_initial_project, set_desktop_identity
from tests.gui.conftest import alpaca


def test_a_data_file_on_the_command_line_is_imported_on_the_data_page(
    window, qtbot, write_jsonl, tmp_path, monkeypatch
):
    path = write_jsonl("questions.jsonl", [alpaca(i) for i in range(1, 8)])
    monkeypatch.chdir(tmp_path)
    open_initial_project(window, "questions.jsonl")  # relative, as typed in a terminal
    page = window.pages["Data"]
    qtbot.waitUntil(
        lambda: (
            page._load_task is None
            and page.state.dataset is not None
            and page.state.dataset.path == str(path)
        ),
        timeout=60000,
    )
    assert window.current_page() == "Data"
    assert page.records_model.rowCount() == 7
    assert "The number is 7." in str(page.records_model.records[-1])
    assert page.tabs.tabText(0) == "Records (7)"
    assert page.path_label.text() == "questions.jsonl"
    assert window.state.config.data.path == str(path)  # training would use this file


def test_the_app_names_its_desktop_entry_and_has_the_icon(qapp):
    from studio import desktop

    set_desktop_identity(qapp)
    assert qapp.desktopFileName() == desktop.APP_ID
    assert Path(desktop.desktop_file()).stem == desktop.APP_ID
    icon = qapp.windowIcon()
    assert not icon.isNull()
    assert icon.pixmap(48, 48).width() == 48
