"""Export core and `studio export`: the merged Hugging Face folder matches base+adapter in
stock transformers, and every failure (no adapter, a target that exists, a full disk, a
cancel, a kill) gives one clear sentence and leaves nothing half-written under the target."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.cli import main
from studio.core.export import ExportOptions, export_events, run_export
from tests.export_runs import CONVERSATIONS, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    return make_run(tmp_path_factory.mktemp("export"), tiny_model)


def _logits(model, tokenizer, text):
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits[0]


def test_hf_export_loads_in_stock_transformers_and_matches_base_plus_adapter(run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    last = run_export(ExportOptions(adapter=str(run), target="hf", output=str(out)))
    assert last.type == "done" and last.status == "completed", last
    assert Path(last.adapter) == out
    merged = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    base_dir = json.loads((run / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    plain = _logits(base, tok, "What is 2 plus 3?")
    tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
    text = "What is 2 plus 3?"
    expected, got = _logits(tuned, tok, text), _logits(merged, tok, text)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(plain, expected, atol=1e-2)  # the adapter does change the model
    assert merged.dtype == torch.float32  # an fp32 base stays fp32 under "auto"
    # The trained template (chatml) and a generation config that stops at the end of a turn.
    conv = CONVERSATIONS[0][:1]
    rendered = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nWhat is 1 plus 1?<|im_end|>\n<|im_start|>assistant\n"
    eos = merged.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])
    report = json.loads((out / "export.json").read_text())
    names = {f["name"] for f in report["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in report["files"])
    assert report["target"] == "hf" and report["source"]["adapter"] == str(run / "adapter")


def test_bf16_base_is_merged_and_saved_in_bf16(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    base.save_pretrained(tmp_path / "bf16")
    for f in Path(tiny_model).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special")):
            (tmp_path / "bf16" / f.name).write_bytes(f.read_bytes())
    run = make_run(tmp_path, tmp_path / "bf16")
    last = run_export(ExportOptions(adapter=str(run), target="hf"))
    assert last.type == "done", last
    assert Path(last.adapter).name == "hf-bfloat16"
    assert AutoModelForCausalLM.from_pretrained(last.adapter).dtype == torch.bfloat16


def test_qlora_run_says_the_adapter_was_trained_against_the_4bit_base(tmp_path, tiny_model):
    run = make_run(tmp_path, tiny_model, quant="4bit")
    events = list(export_events(ExportOptions(adapter=str(run), target="hf")))
    assert events[-1].type == "done"
    warnings = [e.message for e in events if e.type == "log" and e.level == "warning"]
    assert any("trained against the 4bit base" in w for w in warnings), warnings
    report = json.loads((Path(events[-1].adapter) / "export.json").read_text())
    assert any("4bit" in n for n in report["notes"])


def export_cli(capsys, *args):
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> str:
    """The single `error:` line of a failed command (progress notes may precede it)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_target_that_exists_is_refused_then_replaced_with_overwrite(run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "hf", "--output", str(out))
    assert code == 2
    line = one_error(err)
    assert "already holds files" in line and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "mine"
    code, stdout, err = export_cli(
        capsys, "--adapter", str(run), "--to", "hf", "--output", str(out), "--overwrite"
    )
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert str(out) in stdout


def test_a_run_with_no_adapter_is_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "run.yaml").write_text("output: x\n")
    code, _, err = export_cli(capsys, "--adapter", str(empty), "--to", "hf")
    assert code == 2
    assert "has no adapter_config.json" in one_error(err)


def test_bad_type_and_unsupported_architecture_are_one_line(run, tmp_path, capsys):
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "gguf", "--quant", "q3_x")
    assert code == 2 and "is not a GGUF type" in one_error(err)


def test_not_enough_disk_space_is_said_before_writing(run, tmp_path, capsys, monkeypatch):
    import shutil as shutil_mod

    real = shutil_mod.disk_usage
    monkeypatch.setattr(
        "studio.core.export.pipeline.shutil.disk_usage",
        lambda p: real(p)._replace(free=1000),
    )
    out = tmp_path / "full"
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "hf", "--output", str(out))
    line = one_error(err)
    assert code == 2 and "not enough free space" in line and "needs about" in line
    assert not out.exists() and not (tmp_path / ".tmp-full").exists()


def test_disk_filling_up_while_writing_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("studio.core.export.stream_merge._write_shard", full)
    out = tmp_path / "filling"
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "hf", "--output", str(out))
    assert code == 2 and "disk filled up" in one_error(err)
    assert not out.exists() and not (tmp_path / ".tmp-filling").exists()


def test_cancel_leaves_nothing_under_the_target(run, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "cancelled"
    events = []
    for event in export_events(
        ExportOptions(adapter=str(run), target="hf", output=str(out)), cancel
    ):
        events.append(event)
        if event.type == "log" and "merging the adapter" in event.message:
            cancel.set()
    assert events[-1].type == "done" and events[-1].status == "stopped"
    assert not out.exists() and not (tmp_path / ".tmp-cancelled").exists()


def test_a_kill_during_export_leaves_no_partial_output(tmp_path):
    from studio.core.tiny import build_model

    # Big enough (~100 MB in fp32) that writing it takes a while to catch in the act.
    base = build_model(tmp_path / "base", hidden_size=512, layers=8, intermediate_size=1408)
    run = make_run(tmp_path, base)
    out = tmp_path / "killed"
    tmp = tmp_path / ".tmp-killed"
    cmd = [
        sys.executable,
        "-m",
        "studio",
        "export",
        "--adapter",
        str(run),
        "--to",
        "hf",
        "--output",
        str(out),
        "--events",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(tmp.glob("*.safetensors")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.005)
        assert any(tmp.glob("*.safetensors")), "the export never started writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    # The next export clears the stale temporary folder and completes.
    last = run_export(ExportOptions(adapter=str(run), target="hf", output=str(out)))
    assert last.type == "done" and (out / "model.safetensors").is_file()
    assert not tmp.exists()


def test_python_api_export(run, tmp_path):
    import studio

    result = studio.export(run, to="hf", output=tmp_path / "api")
    assert result.output == tmp_path / "api" and (result.output / "config.json").is_file()
    assert result.report["target"] == "hf"
    with pytest.raises(studio.ExportError, match="already holds files"):
        studio.export(run, to="hf", output=tmp_path / "api")


def test_onnx_target_writes_a_verified_folder(run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "onnx"
    last = run_export(ExportOptions(adapter=str(run), target="onnx", output=str(out)))
    assert last.type == "done", last
    report = json.loads((out / "export.json").read_text())
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / ".merged").exists()  # the scratch merge is not shipped
    assert report["verification"]["status"] == "passed"
    assert report["verification"]["identical_prompts"] == len(report["verification"]["prompts"])


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_in_llama_cpp_gives_transformers_greedy_tokens(run, tmp_path, quant):
    """The export's own check, on by default: llama.cpp (llama-cpp-python, the gguf extra)
    runs the GGUF on the run's prompts; the first 16 greedy tokens equal transformers'."""
    pytest.importorskip("llama_cpp")
    out = tmp_path / quant
    last = run_export(ExportOptions(adapter=str(run), target="gguf", quant=quant, output=str(out)))
    assert last.type == "done", last
    check = json.loads((out / "export.json").read_text())["verification"]
    assert check["status"] == "passed", check
    assert check["tokenizer_match"] is True
    assert check["identical_prompts"] == len(check["prompts"]) == 3
    assert all(r["greedy_identical_tokens"] == r["tokens"] == 16 for r in check["prompts"])
    assert check["max_logit_diff"] < (1e-3 if quant == "f16" else 0.05)
    # The prompts are the run's own conversations, not canned ones.
    assert check["prompts"][0]["prompt"] == CONVERSATIONS[0][0]["content"]


def test_k_quant_through_llama_cpp_and_an_ollama_modelfile(run, tmp_path):
    pytest.importorskip("llama_cpp")
    import gguf

    out = tmp_path / "ollama"
    last = run_export(
        ExportOptions(adapter=str(run), target="ollama", quant="q4_k_m", output=str(out))
    )
    assert last.type == "done", last
    files = sorted(p.name for p in out.iterdir())
    assert files == ["Modelfile", "export.json", "run-q4_k_m.gguf"]  # no f16 intermediate left
    reader = gguf.GGUFReader(out / "run-q4_k_m.gguf")
    file_type = reader.fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./run-q4_k_m.gguf")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    report = json.loads((out / "export.json").read_text())
    assert report["commands"]["ollama"].startswith("ollama create run -f ")


def test_k_quant_without_llama_cpp_says_how_to_get_it(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("studio.core.export.verify.llama_cpp_available", lambda: False)
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "gguf", "--quant", "q4_k_m")
    line = one_error(err)
    assert code == 2 and 'pip install "studio[gguf]"' in line and "q8_0" in line


def test_unsupported_architecture_is_one_clear_line(tmp_path, capsys):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from studio.core.tiny import build_tokenizer

    folder = tmp_path / "gpt2"
    torch.manual_seed(0)
    tok = build_tokenizer()
    GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok))
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    run = make_run(tmp_path, folder, targets=("c_attn",))
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "gguf")
    line = one_error(err)
    assert code == 2 and "GPT2LMHeadModel" in line and "LlamaForCausalLM" in line
    assert not (run / "exports").exists()
    # The Hugging Face folder works for any architecture transformers knows.
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "hf")
    assert code == 0, err


def _same_logits(folder, run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    base_dir = json.loads((run / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(folder)
    text = "What is 4 plus 1?"
    return torch.allclose(_logits(merged, tok, text), _logits(tuned, tok, text), atol=1e-4)


def test_an_adapter_only_peft_can_merge_takes_peft_s_path(tmp_path, tiny_model):
    run = make_run(tmp_path, tiny_model, dora=True)
    events = list(export_events(ExportOptions(adapter=str(run), target="hf")))
    assert events[-1].type == "done", events[-1]
    logs = [e.message for e in events if e.type == "log"]
    assert any(m.startswith("loading") and "merging the adapter" in m for m in logs), logs
    assert _same_logits(Path(events[-1].adapter), run)


def test_streamed_merge_writes_shards_with_an_index(run, tmp_path):
    from studio.core.export.stream_merge import streamable, write_safetensors

    weights = streamable(
        run / "adapter",
        Path(
            json.loads((run / "adapter" / "adapter_config.json").read_text())[
                "base_model_name_or_path"
            ]
        ),
        "float32",
    )
    assert weights is not None and len(weights.deltas) == 8  # 4 targets x 2 layers
    folder = tmp_path / "sharded"
    folder.mkdir()
    write_safetensors(weights, folder, shard_bytes=64 * 1024)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(weights)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((weights.base_dir / name).read_bytes())
    assert _same_logits(folder, run)


@pytest.mark.parametrize("builder", ["build_qwen2", "build_qwen3", "build_spm_llama"])
def test_other_families_end_to_end(tmp_path, builder):
    """Qwen2 (biases, byte-level BPE with Qwen's pre-tokenizer), Qwen3 and a SentencePiece-style
    Llama: the merged folder matches base+adapter, and the GGUF (checked in llama.cpp when it
    is installed) gives transformers' greedy tokens."""
    from tests import export_models

    base = getattr(export_models, builder)(tmp_path / "base")
    run = make_run(tmp_path, base, template="chatml")
    last = run_export(ExportOptions(adapter=str(run), target="hf"))
    assert last.type == "done", last
    assert _same_logits(Path(last.adapter), run)
    last = run_export(ExportOptions(adapter=str(run), target="gguf", quant="f16"))
    assert last.type == "done", last
    check = json.loads((Path(last.adapter) / "export.json").read_text())["verification"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert check["status"] == "skipped" and "studio[gguf]" in check["reason"]
        return
    assert check["status"] == "passed", check
    assert check["identical_prompts"] == 3 and check["tokenizer_match"]


def test_a_llama_cpp_crash_during_the_check_does_not_end_the_export(run, tmp_path, monkeypatch):
    """Some llama.cpp builds segfault on some CPUs: the check runs in its own process, so the
    export is still written and the report says the check could not run, and why."""
    pytest.importorskip("llama_cpp")
    import subprocess as sp

    real = sp.Popen

    def crashing(cmd, **kw):
        crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
        return real([sys.executable, "-c", crash], **kw)

    monkeypatch.setattr("subprocess.Popen", crashing)
    out = tmp_path / "crash"
    last = run_export(ExportOptions(adapter=str(run), target="gguf", quant="q8_0", output=str(out)))
    assert last.type == "done", last
    check = json.loads((out / "export.json").read_text())["verification"]
    assert check["status"] == "skipped"
    assert "llama.cpp crashed (signal 11)" in check["reason"]
    assert (out / "run-q8_0.gguf").stat().st_size > 0


def test_overwrite_never_replaces_the_run_or_the_base(run, tmp_path, capsys):
    for target in (run, run / "adapter", run.parent):
        code, _, err = export_cli(
            capsys, "--adapter", str(run), "--to", "hf", "--output", str(target), "--overwrite"
        )
        assert code == 2 and "which the export reads" in one_error(err)
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "run.yaml").is_file()


def test_only_the_model_s_own_weight_files_are_merged(tmp_path, tiny_model):
    import shutil as shutil_mod

    from safetensors.torch import save_file

    base = tmp_path / "base"
    shutil_mod.copytree(tiny_model, base)
    # A second copy of the weights under other names, as some repositories ship.
    import torch

    save_file(
        {"layers.0.attention.wq.weight": torch.zeros(4, 4)}, base / "consolidated.safetensors"
    )
    run = make_run(tmp_path, base)
    last = run_export(ExportOptions(adapter=str(run), target="hf"))
    assert last.type == "done", last
    from safetensors import safe_open

    with safe_open(str(Path(last.adapter) / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "layers.0.attention.wq.weight" not in names and "lm_head.weight" in names
    assert _same_logits(Path(last.adapter), run)


def test_a_truncated_base_file_is_one_clear_line(tmp_path, tiny_model, capsys):
    import shutil as shutil_mod

    base = tmp_path / "base"
    shutil_mod.copytree(tiny_model, base)
    run = make_run(tmp_path, base)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    code, _, err = export_cli(capsys, "--adapter", str(run), "--to", "gguf", "--no-verify")
    assert code == 2 and "is cut short" in one_error(err)
    assert not (run / "exports").exists() or not any((run / "exports").iterdir())
