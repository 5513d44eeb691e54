"""`studio --selftest`: the demo trained a few steps and one chat answer, from a source install;
a broken install is one sentence and exit status 1."""

import io
import os
import re
import subprocess
import sys

import pytest

from studio.commands import selftest
from studio.core import paths


@pytest.mark.slow
def test_selftest_trains_the_demo_and_chats(tmp_path):
    if not paths.demo_available():
        pytest.skip("the bundled demo is not in this checkout")
    env = dict(os.environ, STUDIO_HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "studio", "--selftest"],
        capture_output=True,
        text=True,
        env=env,
        cwd=paths.repo_root(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    stages = [line for line in lines if line.startswith("[")]
    assert [line.split()[1] for line in stages] == ["load", "train", "chat"]
    assert all(re.match(r"\[\d/3\] \w+ +\d+\.\d s  \S", line) for line in stages)
    assert "demo model" in stages[0]
    loss = re.search(rf"{selftest.STEPS} steps, loss (\d+\.\d+) -> (\d+\.\d+)", stages[1])
    assert loss, stages[1]
    assert float(loss.group(2)) < float(loss.group(1))  # a lr of 3e-3 on the demo: it learns
    assert selftest.QUESTION in stages[2] and re.search(r"\((\d+) tokens\)$", stages[2])
    assert re.fullmatch(r"Self-test passed in \d+\.\d s\.", lines[-1])
    # The temporary run folder is gone, and nothing was written to the user's Studio home.
    assert not list(tmp_path.glob("studio-selftest-*"))
    assert not (tmp_path / "home").exists()


def test_missing_demo_is_one_sentence_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "demo_dir", lambda: tmp_path / "no-demo")
    out = io.StringIO()
    assert selftest.run(out=out) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("Self-test failed: load: the bundled demo is missing")
    assert str(tmp_path / "no-demo") in err
    assert "[1/3]" not in out.getvalue()


def test_an_unexpected_error_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    def broken(self):
        raise RuntimeError("CUDA driver version is insufficient\nmore detail here")

    monkeypatch.setattr(selftest.Selftest, "load", broken)
    assert selftest.run(out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err == "Self-test failed: load: RuntimeError: CUDA driver version is insufficient\n"


def test_selftest_option_and_command_are_the_same():
    from studio.cli import build_parser, command_argv

    assert command_argv(["--selftest"]) == ["selftest"]
    assert build_parser().parse_args(command_argv(["--selftest"])).handler is selftest.run
