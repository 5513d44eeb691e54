"""`studio chat`: one answer with --prompt (a trained adapter changes it), an interactive
multi-turn session with /system, /reset and /quit, and clear errors."""

import io
import subprocess
import sys

import pytest

from studio.cli import main
from studio.core.infer import ChatModel
from studio.core.paths import demo_dir

QUESTION = "What is the capital of Turkey?"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A short demo fine-tune (~30 s on two busy cores), shared by the tests here."""
    out = tmp_path_factory.mktemp("chat") / "demo-run"
    cmd = [
        sys.executable,
        "-m",
        "studio",
        "train",
        "--demo",
        "--output",
        str(out),
        "--max-steps",
        "12",
        "--batch-size",
        "2",
        "--seq-len",
        "128",
        "--eval-every",
        "0",
        "--save-every",
        "0",
        "--val-split",
        "0",
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def ask(capsys, *args) -> tuple[int, str, str]:
    code = main(
        ["chat", "--prompt", QUESTION, "--temperature", "0", "--max-new-tokens", "24", *args]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_answers_with_the_adapter_applied(demo_run, capsys):
    code, base, _ = ask(capsys, "--model", str(demo_dir() / "model"))
    assert code == 0 and base.strip()
    code, tuned, err = ask(capsys, "--model", str(demo_dir() / "model"), "--adapter", str(demo_run))
    assert code == 0 and tuned.strip() and tuned != base
    assert "tokens/s" in err and "tokens/s" not in tuned  # stats stay off stdout
    # Greedy answers are deterministic, and the base model is found from run.yaml.
    code, again, _ = ask(capsys, "--adapter", str(demo_run / "adapter"))
    assert code == 0 and again == tuned


@pytest.fixture
def chat_calls(monkeypatch):
    """The messages of every ChatModel.chat call (the model still answers)."""
    calls = []
    real_chat = ChatModel.chat

    def spy(self, messages, *a, **k):
        calls.append([dict(m) for m in messages])
        return real_chat(self, messages, *a, **k)

    monkeypatch.setattr(ChatModel, "chat", spy)
    return calls


def test_interactive_multi_turn_reset_and_system(demo_run, capsys, monkeypatch, chat_calls):
    calls = chat_calls
    script = (
        "Hello!\nWhat is 45 plus 29?\n/reset\n/system Be brief.\nHello!\n/help\n/quit\nnever read\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code = main(["chat", "--adapter", str(demo_run), "--temperature", "0", "--max-new-tokens", "8"])
    out, err = capsys.readouterr()
    assert code == 0 and len(calls) == 3
    assert [m["role"] for m in calls[0]] == ["user"]
    assert [m["role"] for m in calls[1]] == ["user", "assistant", "user"]
    assert calls[1][1]["content"] and calls[1][1]["content"] in out  # the reply is kept as history
    assert calls[2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
    ]
    assert "new conversation" in err and "/reset" in err


def test_end_of_input_exits_cleanly(tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", "--model", str(tiny_model)]) == 0


def test_errors_are_one_clear_line(tmp_path, capsys, tiny_model):
    assert main(["chat", "--model", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    assert main(["chat", "--model", str(tiny_model), "--prompt", "hi", "--temperature", "-1"]) == 2
    assert "generation.temperature" in capsys.readouterr().err
    assert (
        main(["chat", "--model", str(tiny_model), "--adapter", str(tmp_path), "--prompt", "hi"])
        == 2
    )
    assert "adapter_config.json" in capsys.readouterr().err


def test_template_refusing_the_conversation_is_one_clear_line(tmp_path, capsys):
    from studio.core.tiny import CHATML_TEMPLATE, build_model

    refusing = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML_TEMPLATE
    )
    path = build_model(tmp_path / "model", chat_template=refusing)
    code = main(["chat", "--model", str(path), "--system", "Be brief.", "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2 and "System role not supported" in err and "Traceback" not in err


def test_interactive_chat_survives_a_conversation_too_long(
    tiny_model, capsys, monkeypatch, chat_calls
):
    """Outgrowing the context is reported and the chat goes on: the long message is dropped
    and the next one is answered; end of input still exits 0."""
    calls = chat_calls
    monkeypatch.setattr(sys, "stdin", io.StringIO("word " * 1500 + "\nhello\n"))
    code = main(["chat", "--model", str(tiny_model), "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(calls) == 2 and calls[1] == [{"role": "user", "content": "hello"}]
    assert "context" in err and "/reset" in err and "Traceback" not in err
    assert "tokens/s" in err  # "hello" was answered


def test_interactive_chat_with_the_demo_model_piped(tmp_path):
    """The reported repro, end to end: a 1,500-word line, then "hello", into `studio chat`."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio",
            "chat",
            "--model",
            str(demo_dir() / "model"),
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
        ],
        input="word " * 1500 + "\nhello\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "tokens/s" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_dtype_and_allow_pickle_flags_reach_the_loader(command, monkeypatch, capsys):
    import studio.core.infer as infer
    from studio.core.errors import ModelError

    seen = []

    def fake_load(*a, **k):
        seen.append(k)
        raise ModelError("stop here", field="model.path")

    monkeypatch.setattr(infer, "load_chat_model", fake_load)
    extra = ["--prompt", "hi"] if command == "chat" else ["--port", "0"]
    assert main([command, "--model", "m", *extra]) == 2
    assert main([command, "--model", "m", "--dtype", "bfloat16", "--allow-pickle", *extra]) == 2
    assert [(k["dtype"], k["allow_pickle"]) for k in seen] == [("auto", False), ("bfloat16", True)]
    with pytest.raises(SystemExit) as e:
        main([command, "--model", "m", "--dtype", "int8", *extra])
    assert e.value.code == 2
    capsys.readouterr()
