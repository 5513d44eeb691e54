"""The Linux menu entry and icons: shipped files, install and uninstall under XDG_DATA_HOME,
desktop-file-validate on both entries, and `studio FILE` opening the app on a data file."""

import shutil
import struct
import subprocess

import pytest

from studio import desktop
from studio.cli import command_argv, main


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    home = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_shipped_icons_have_the_sizes_their_folders_say():
    assert desktop.icon_svg().read_text().lstrip().startswith("<?xml")
    for size in desktop.ICON_SIZES:
        assert _png_size(desktop.icon_png(size)) == (size, size)


def test_install_writes_entry_and_icons_and_uninstall_removes_exactly_them(data_home):
    neighbour = data_home / "applications" / "other.desktop"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("[Desktop Entry]\n")
    written = desktop.install(command=["/opt/my studio/bin/studio"])
    expected = [
        data_home / "applications" / "studio.desktop",
        data_home / "icons/hicolor/scalable/apps/studio.svg",
        *(data_home / f"icons/hicolor/{s}x{s}/apps/studio.png" for s in desktop.ICON_SIZES),
    ]
    assert written == expected
    assert all(p.is_file() for p in expected)
    assert expected[1].read_bytes() == desktop.icon_svg().read_bytes()
    assert expected[-1].read_bytes() == desktop.icon_png(256).read_bytes()
    entry = expected[0].read_text()
    assert 'Exec="/opt/my studio/bin/studio" %f\n' in entry
    assert "TryExec=/opt/my studio/bin/studio\n" in entry
    assert "Icon=studio\n" in entry and "text/csv;" in entry

    assert desktop.uninstall() == expected
    assert not any(p.exists() for p in expected)
    assert neighbour.is_file()  # someone else's entry stays
    assert desktop.uninstall() == []  # twice is harmless


def test_cli_options_install_and_uninstall(data_home, capsys):
    assert main(["--install-desktop-entry"]) == 0
    entry = data_home / "applications" / "studio.desktop"
    exec_line = next(x for x in entry.read_text().splitlines() if x.startswith("Exec="))
    assert exec_line == "Exec=" + " ".join(desktop.exec_command()) + " %f"
    assert str(entry) in capsys.readouterr().out
    assert main(["--uninstall-desktop-entry"]) == 0
    assert not entry.exists()
    assert not (data_home / "icons/hicolor/48x48/apps/studio.png").exists()
    assert f"removed {entry}" in capsys.readouterr().out


def test_xdg_data_home_unset_or_relative_means_local_share(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert desktop.data_home() == tmp_path / ".local" / "share"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert desktop.data_home() == tmp_path / ".local" / "share"


@pytest.mark.skipif(not shutil.which("desktop-file-validate"), reason="no desktop-file-validate")
def test_desktop_file_validate_passes_on_shipped_and_installed(data_home):
    installed = desktop.install(command=["/opt/my studio/bin/studio"])[0]
    for path in (desktop.desktop_file(), installed):
        out = subprocess.run(
            ["desktop-file-validate", str(path)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert (out.stdout + out.stderr).strip() == ""  # clean: no error, warning or hint


def test_a_file_as_the_only_argument_opens_the_app_on_it(tmp_path, monkeypatch):
    data = tmp_path / "qa.jsonl"
    data.write_text("{}\n")
    assert command_argv([str(data)]) == ["gui", str(data)]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").write_text("")  # a file named like a command: the command wins
    assert command_argv(["train"]) == ["train"]
    assert command_argv(["missing.jsonl"]) == ["missing.jsonl"]  # argparse says why
    assert command_argv([str(data), "--smoke"]) == [str(data), "--smoke"]
