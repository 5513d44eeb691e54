"""ONNX export of a merged model with a KV cache, and greedy decoding with onnxruntime.

The graph's inputs and outputs use the names optimum and transformers.js use, so other
runtimes can drive it: `input_ids`, `attention_mask`, `position_ids` and
`past_key_values.{i}.key/value` in; `logits` and `present.{i}.key/value` out. Batch,
sequence and past lengths are dynamic; weights are fp32 (onnxruntime's CPU kernels).

optimum-onnx pins transformers < 4.58, so the export is done here: a small wrapper turns
the flat cache tensors into a `DynamicCache` and back, and `torch.onnx.export` traces it.
The dynamo exporter (torch.export + onnxscript) is the one PyTorch maintains and it fails
loudly on data-dependent branches instead of baking them in; the TorchScript exporter is
the fallback when onnxscript is missing or dynamo cannot trace a model.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.export.errors import Cancelled

INSTALL = 'pip install "studio[onnx]"'
OPSET = 18  # the lowest opset onnxscript's torchlib emits; onnxruntime >= 1.14 runs it
# Protobuf caps one file at 2 GB: weights past this go to one `model.onnx.data` beside it.
EXTERNAL_DATA_BYTES = 1 << 30
# What a runtime needs beside the graph: config, tokenizer, generation settings, template.
COPY_PATTERNS = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json")
COPY_PATTERNS += ("added_tokens.json", "vocab.*", "merges.txt", "chat_template*", "*.jinja")
# Sample shapes for tracing: all different and above 1, because torch.export specialises
# dimensions of size 0 or 1 and could tie dimensions that happen to be equal.
SAMPLE_BATCH, SAMPLE_SEQ, SAMPLE_PAST = 2, 3, 5


def onnx_available() -> bool:
    """onnx and onnxruntime are importable (onnxscript is optional: it enables dynamo)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _require() -> None:
    if not onnx_available():
        raise StudioError(f"ONNX export needs onnx and onnxruntime: {INSTALL}")


def cache_names(n_layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), key then value for each layer."""
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return past, present


def _cache_shape(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a Llama/Qwen2-style decoder."""
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, kv_heads, head_dim


def _wrap(model):
    """A module whose forward takes and returns flat tensors, as an ONNX graph must."""
    import inspect

    import torch
    from transformers import DynamicCache

    # transformers 5.x renamed `past_key_values` to `cache`; older 5.x only has the first.
    cache_arg = (
        "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    )
    n_layers = _cache_shape(model.config)[0]

    class DecoderWithCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(n_layers)]
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **{cache_arg: DynamicCache(ddp_cache_data=pairs)},
            )
            cache = out.get("cache")
            cache = out.get("past_key_values") if cache is None else cache
            flat = [t for layer in cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *flat)

    return DecoderWithCache().eval()


def _sample(config):
    import torch

    n_layers, kv_heads, head_dim = _cache_shape(config)
    b, s, p = SAMPLE_BATCH, SAMPLE_SEQ, SAMPLE_PAST
    ids = torch.randint(0, config.get_text_config(decoder=True).vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    positions = torch.arange(p, p + s).expand(b, s).contiguous()
    past = [torch.randn(b, kv_heads, p, head_dim) for _ in range(2 * n_layers)]
    return (ids, mask, positions, *past)


def _export_dynamo(wrapper, args, path: Path, names: tuple, external: bool) -> None:
    import torch
    from torch.export import Dim

    batch, seq, past, total = Dim("batch"), Dim("sequence"), Dim("past"), Dim("total")
    n_past = len(args) - 3
    shapes = (
        {0: batch, 1: seq},
        {0: batch, 1: total},
        {0: batch, 1: seq},
        tuple({0: batch, 2: past} for _ in range(n_past)),
    )
    program = torch.onnx.export(
        wrapper,
        args,
        input_names=names[0],
        output_names=names[1],
        dynamic_shapes=shapes,
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    program.save(path, external_data=external)


def _export_torchscript(wrapper, args, path: Path, names: tuple, external: bool) -> None:
    import onnx
    import torch

    inputs, outputs = names
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"}}
    axes["position_ids"] = {0: "batch", 1: "sequence"}
    axes.update({n: {0: "batch", 2: "past"} for n in inputs[3:]})
    axes["logits"] = {0: "batch", 1: "sequence"}
    axes.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    # Past 2 GB this exporter writes one file per tensor: trace into a scratch folder and
    # gather the weights into one `model.onnx.data`, as the dynamo path writes them.
    scratch = path.parent / ".onnx-trace"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        torch.onnx.export(
            wrapper,
            args,
            str(scratch / path.name),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(scratch / path.name))
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=external,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _trace(wrapper, args, path: Path, names: tuple, external: bool, exporter: str, say) -> str:
    """Write the graph with the first exporter that works; return its name."""
    import torch

    order = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"]}.get(exporter, [exporter])
    if "dynamo" in order and importlib.util.find_spec("onnxscript") is None:
        if exporter == "dynamo":
            raise StudioError(f"the dynamo ONNX exporter needs onnxscript: {INSTALL}")
        order = ["torchscript"]
    import logging

    # The exporter logs, per run, every optional op it skips (torchvision's...): noise here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, not the person's concern
        for i, name in enumerate(order):
            say(f"tracing the model with torch.onnx ({name} exporter)")
            try:
                fn = _export_dynamo if name == "dynamo" else _export_torchscript
                fn(wrapper, args, path, names, external)
                return name
            except Exception as e:
                if i == len(order) - 1:
                    raise StudioError(f"ONNX export failed ({name} exporter): {e}") from e
                say(f"the {name} exporter failed ({type(e).__name__}); trying {order[i + 1]}")
    raise AssertionError("unreachable")


def export_onnx(
    model_dir,
    out_dir,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    exporter: str = "auto",
) -> dict:
    """Write `out_dir/model.onnx` (+ `model.onnx.data` when large) from a merged Hugging
    Face folder, with its config, tokenizer and template files; return a summary.

    exporter: "auto" (dynamo when onnxscript is installed, TorchScript if that fails),
    "dynamo" or "torchscript". Cancellation is checked between stages: a trace cannot be
    stopped half-way.
    """
    _require()
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise StudioError(f"unknown ONNX exporter {exporter!r}: auto, dynamo or torchscript")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    stages = 4

    def stage(done: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled()
        if progress is not None:
            progress(done, stages)

    stage(0)
    # fp32 whatever the folder holds: onnxruntime's CPU kernels have no bf16 matmul.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    wrapper = _wrap(model)
    n_layers = _cache_shape(model.config)[0]
    past_names, present_names = cache_names(n_layers)
    names = (
        ["input_ids", "attention_mask", "position_ids", *past_names],
        ["logits", *present_names],
    )
    external = sum(p.numel() * 4 for p in model.parameters()) > EXTERNAL_DATA_BYTES
    args = _sample(model.config)
    with torch.no_grad():
        expected = wrapper(*args)[0].numpy()
    stage(1)

    path = out_dir / "model.onnx"
    for old in (path, out_dir / "model.onnx.data"):
        old.unlink(missing_ok=True)  # a rerun must not leave stale weights beside the graph
    used = _trace(wrapper, args, path, names, external, exporter, say)
    del model, wrapper
    stage(2)

    # The graph must give the traced model's logits on the sample before anything relies on it.
    feed = {n: a.numpy() for n, a in zip(names[0], args, strict=True)}
    got = _session(path).run(["logits"], feed)[0]
    # Leave no session behind: it holds the model's size in memory, and on Windows an open
    # weights file would stop the pipeline renaming the folder into place.
    release_session()
    diff = float(np.abs(got - expected).max())
    if not np.isfinite(diff) or diff > 1e-3:
        raise StudioError(
            f"the ONNX graph disagrees with the model (max logit difference {diff:.3g})"
        )
    say(f"onnxruntime matches the model on a sample (max logit difference {diff:.2g})")
    stage(3)

    files = [f.name for f in (path, out_dir / "model.onnx.data") if f.exists()]
    for pattern in COPY_PATTERNS:
        for src in sorted(model_dir.glob(pattern)):
            if src.is_file() and src.name not in files:
                shutil.copy2(src, out_dir / src.name)
                files.append(src.name)
    stage(4)
    return {
        "files": files,
        "opset": OPSET,
        "exporter": used,
        "inputs": names[0],
        "outputs": names[1],
        "external_data": external,
        "max_logit_diff": diff,
    }


# --- running it ---------------------------------------------------------------------

_SESSION: dict = {}  # one session, reused while the same file is decoded (verification)


def _session(path: Path):
    """An onnxruntime session for `path`, kept until another file is opened or
    `release_session()`: loading a large graph costs seconds and its size in memory."""
    import onnxruntime as ort

    path = Path(path).resolve()
    key = (str(path), path.stat().st_mtime_ns)
    if _SESSION.get("key") != key:
        _SESSION.clear()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about fusions it skipped
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        _SESSION.update(key=key, session=sess)
    return _SESSION["session"]


def release_session() -> None:
    """Free the cached onnxruntime session (its weights are the size of the model)."""
    _SESSION.clear()


def onnx_greedy(
    out_dir,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """Exactly `max_new_tokens` greedy tokens (no stop at end-of-sequence, like the
    transformers side of the verification): the prompt in one step, then one token a step
    with the KV cache the graph returns. `on_token(token)` is called as each one is chosen."""
    _require()
    import numpy as np

    session = _session(Path(out_dir) / "model.onnx")
    inputs = {i.name: i for i in session.get_inputs()}
    past = {
        name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
        for name, i in inputs.items()
        if name.startswith("past_key_values.")
    }
    past_names = list(past)
    outputs = ["logits"] + [n.replace("past_key_values.", "present.") for n in past_names]
    step, seen, out = list(prompt_ids), 0, []
    for _ in range(max_new_tokens):
        n = len(step)
        feed = {
            "input_ids": np.array([step], dtype=np.int64),
            "attention_mask": np.ones((1, seen + n), dtype=np.int64),
            "position_ids": np.arange(seen, seen + n, dtype=np.int64)[None],
            **past,
        }
        logits, *present = session.run(outputs, {k: v for k, v in feed.items() if k in inputs})
        seen += n
        token = int(logits[0, -1].argmax())
        out.append(token)
        if on_token is not None:
            on_token(token)
        step = [token]
        past = dict(zip(past_names, present, strict=True))
    return out
