"""Atomic folders: a kill between the two renames of a replacement loses nothing."""

import os

import pytest

from studio.core.checkpoint import atomic_folder, list_checkpoints, recover_folder


def _write(text):
    def write(tmp):
        (tmp / "state.json").write_text(text)

    return write


@pytest.mark.parametrize("new_written", [True, False])
def test_a_replacement_cut_between_its_renames_is_finished(tmp_path, new_written):
    final = tmp_path / "step-000004"
    atomic_folder(final, _write("old"))
    # What atomic_folder does on a replace, stopped by a kill after its first rename.
    tmp = tmp_path / ".tmp-step-000004"
    if new_written:
        tmp.mkdir()
        (tmp / "state.json").write_text("new")
    os.rename(final, tmp_path / ".old-step-000004")
    assert not final.exists() and list_checkpoints(tmp_path) != []  # listing recovers it
    assert (final / "state.json").read_text() == ("new" if new_written else "old")
    recover_folder(final)  # nothing left to do
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004"]


def test_the_next_save_recovers_too(tmp_path):
    final = tmp_path / "adapter"
    atomic_folder(final, _write("one"))
    os.rename(final, tmp_path / ".old-adapter")
    atomic_folder(final, _write("two"))
    assert (final / "state.json").read_text() == "two"
    assert not (tmp_path / ".old-adapter").exists() and not (tmp_path / ".tmp-adapter").exists()
