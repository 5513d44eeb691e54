"""ONNX export with a KV cache: onnxruntime's greedy tokens and logits against transformers'.

The tiny models are random, so their logits are close together: identical greedy tokens
over 16 steps only happen when the graph computes the same function, cache included.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from studio.core.errors import StudioError  # noqa: E402
from studio.core.export import onnx_export  # noqa: E402
from studio.core.export.onnx_export import (  # noqa: E402
    Cancelled,
    export_onnx,
    onnx_available,
    onnx_greedy,
)
from studio.core.tiny import build_model  # noqa: E402

PROMPTS = [[5, 17, 33, 99, 12], [40], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 3]]
N_TOKENS = 16
# dynamo is the default exporter when onnxscript is installed; TorchScript otherwise.
EXPORTER = "dynamo" if importlib.util.find_spec("onnxscript") else "torchscript"


def build_qwen2(out):
    """A tiny Qwen2: q/k/v biases (random, so a lost one shows) and tied embeddings."""
    from tests.export_models import build_qwen2 as build

    return build(out, tie=True, intermediate_size=128, seed=1)


def exported(tmp_path_factory, name, build, exporter):
    """Export the way the pipeline does: the merged folder sits inside the output folder."""
    out = tmp_path_factory.mktemp(name)
    model_dir = build(out / ".merged")
    summary = export_onnx(model_dir, out, exporter=exporter)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return out, summary, model


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return exported(tmp_path_factory, "llama", build_model, EXPORTER)


def hf_greedy(model, ids, n):
    """Argmax of a full forward each step: no cache at all on the reference side."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
    return out


def first_step_logits(folder, ids):
    """The prompt's logits from onnxruntime directly, with an empty cache."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None],
    }
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            feed[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    return sess, sess.run(["logits"], feed)[0]


def check_matches(folder, model):
    for ids in PROMPTS:
        assert onnx_greedy(folder, ids, N_TOKENS) == hf_greedy(model, ids, N_TOKENS)
        _, logits = first_step_logits(folder, ids)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits.numpy()
        assert logits.shape == ref.shape
        assert np.abs(logits - ref).max() < 1e-4


def test_llama_greedy_and_logits_match(llama):
    folder, summary, model = llama
    check_matches(folder, model)
    assert summary["opset"] >= 14
    assert summary["inputs"][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert summary["inputs"][3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert summary["outputs"][:2] == ["logits", "present.0.key"]
    assert len(summary["inputs"]) == 3 + 2 * model.config.num_hidden_layers
    assert summary["max_logit_diff"] < 1e-4
    for name in ("model.onnx", "config.json", "tokenizer.json", "chat_template.jinja"):
        assert name in summary["files"] and (folder / name).is_file()
    assert not (folder / ".onnx-trace").exists()


def test_left_padded_batch_matches_unpadded(llama):
    """Dynamic batch and a real attention mask: other runtimes batch with left padding."""
    folder, _, model = llama
    a, b = PROMPTS[2], PROMPTS[0]
    pad = len(a) - len(b)
    mask = np.array([[1] * len(a), [0] * pad + [1] * len(b)], dtype=np.int64)
    sess, _ = first_step_logits(folder, a)
    feed = {
        "input_ids": np.array([a, [0] * pad + b], dtype=np.int64),
        "attention_mask": mask,
        "position_ids": np.clip(mask.cumsum(1) - 1, 0, None),
    }
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            feed[i.name] = np.zeros((2, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    logits = sess.run(["logits"], feed)[0]
    with torch.no_grad():
        for row, ids in enumerate((a, b)):
            ref = model(torch.tensor([ids])).logits[0, -1].numpy()
            assert np.abs(logits[row, -1] - ref).max() < 1e-4


def test_qwen2_with_biases_and_tied_embeddings(tmp_path_factory):
    folder, summary, model = exported(tmp_path_factory, "qwen2", build_qwen2, EXPORTER)
    assert summary["exporter"] == EXPORTER
    check_matches(folder, model)


def test_torchscript_exporter_also_matches(tmp_path_factory):
    """The fallback path, for when onnxscript is missing or dynamo cannot trace a model."""
    folder, summary, model = exported(tmp_path_factory, "ts", build_model, "torchscript")
    assert summary["exporter"] == "torchscript"
    check_matches(folder, model)


def test_cancel_stops_before_writing(tmp_path):
    model_dir = build_model(tmp_path / "m")
    with pytest.raises(Cancelled):
        export_onnx(model_dir, tmp_path / "out", cancel=lambda: True)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_progress_reports_every_stage(tmp_path):
    model_dir = build_model(tmp_path / "m")
    seen = []
    export_onnx(
        model_dir, tmp_path / "out", exporter="torchscript", progress=lambda d, t: seen.append(d)
    )
    assert seen == [0, 1, 2, 3, 4]
    assert not onnx_export._SESSION  # the export's own check leaves no session open


def test_missing_packages_name_the_pip_command(tmp_path, monkeypatch):
    assert onnx_available()
    monkeypatch.setattr(onnx_export, "onnx_available", lambda: False)
    with pytest.raises(StudioError, match=r'pip install "studio\[onnx\]"'):
        export_onnx(tmp_path, tmp_path / "out")
    with pytest.raises(StudioError, match=r'pip install "studio\[onnx\]"'):
        onnx_greedy(tmp_path, [1], 1)


def test_auto_falls_back_to_torchscript(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this model")

    if EXPORTER != "dynamo":
        pytest.skip("auto only tries dynamo when onnxscript is installed")
    monkeypatch.setattr(onnx_export, "_export_dynamo", broken)
    notes = []
    summary = export_onnx(build_model(tmp_path / "m"), tmp_path / "out", log=notes.append)
    assert summary["exporter"] == "torchscript"
    assert any("dynamo exporter failed" in n for n in notes)
