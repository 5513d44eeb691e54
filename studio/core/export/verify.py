"""Prove an export answers like the model it came from, and llama.cpp's K-quants.

After a GGUF is written, llama-cpp-python (the `studio[gguf]` extra) loads it and runs the
run's own prompts; the merged model in transformers runs the same token ids. Reported:
- tokenizer: whether llama.cpp tokenises each prompt text to the same ids as transformers;
- greedy: how many of the first N greedily decoded tokens are identical (expected: all, for
  F32/F16/BF16/Q8_0 on a model that is not on a knife's edge between two tokens);
- teacher-forced along transformers' greedy path: top-1 agreement and the largest logit
  difference, the figures that say how far a quantized type drifts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from studio.core.export.pipeline import ExportError

EXACT_TYPES = ("f32", "f16", "bf16", "q8_0")
"""Types whose greedy tokens must match transformers' for verification to pass."""
K_FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # llama.cpp's llama_ftype numbers


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints its load log on the C stderr; keep the terminal and the GUI log clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def quantize_k(src: Path, dst: Path, qtype: str, *, progress=None, log=None, cancel=None) -> None:
    """An F16 GGUF -> a K-quant GGUF with llama.cpp's own quantizer (in-process)."""
    import llama_cpp

    if progress:
        progress(0, 1)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_FTYPES[qtype]
    params.nthread = os.cpu_count() or 1
    with _quiet_stderr():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not Path(dst).is_file():
        raise ExportError(f"llama.cpp could not quantize the model to {qtype.upper()} (code {rc})")
    if progress:
        progress(1, 1)


def identical_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two greedy runs share before they first differ."""
    return next(
        (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _hf_greedy(model, ids: list[int], n: int) -> tuple[list[int], list]:
    """Greedy tokens from transformers, and the logits at each of those positions."""
    import torch
    from transformers import DynamicCache

    from studio.core.generation import _forward_names

    cache_name, _ = _forward_names(model)  # `cache` on recent 5.x, `past_key_values` before
    # The cache object is filled in place, as in Studio's own generation loop.
    kwargs = {cache_name: DynamicCache(config=model.config), "use_cache": True}
    out, logits = [], []
    with torch.no_grad():
        step_ids = torch.tensor([ids])
        for _ in range(n):
            result = model(input_ids=step_ids, **kwargs)
            row = result.logits[0, -1].float()
            logits.append(row.numpy())
            token = int(row.argmax())
            out.append(token)
            step_ids = torch.tensor([[token]])
    return out, logits


def _llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def _llama_forced(llm, ids: list[int], path: list[int]) -> list:
    """llama.cpp's logits at each step of transformers' greedy path (teacher forcing)."""
    llm.reset()
    llm.eval(ids + path[:-1])
    start = len(ids) - 1
    return [llm.scores[start + i].copy() for i in range(len(path))]


def verify_gguf(
    gguf_path: Path,
    model,
    tokenizer,
    template,
    prompts: list[list[dict]],
    qtype: str,
    n_tokens: int = 16,
    *,
    progress=None,
    log=None,
    cancel=None,
) -> dict:
    import numpy as np
    from llama_cpp import Llama

    texts = [template.prompt(p) for p in prompts]
    id_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    n_ctx = max(len(i) for i in id_lists) + n_tokens + 8
    with _quiet_stderr():
        llm = Llama(
            str(gguf_path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            verbose=False,
            n_threads=os.cpu_count() or 1,
        )
    try:
        rows = []
        for i, (text, ids) in enumerate(zip(texts, id_lists, strict=True)):
            if progress:
                progress(i, len(texts))
            if cancel and cancel():
                break
            llama_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            hf_tokens, hf_logits = _hf_greedy(model, ids, n_tokens)
            with _quiet_stderr():
                ll_tokens = _llama_greedy(llm, ids, n_tokens)
                forced = _llama_forced(llm, ids, hf_tokens)
            same = identical_prefix(hf_tokens, ll_tokens)
            top1 = float(
                np.mean([int(np.argmax(f)) == t for f, t in zip(forced, hf_tokens, strict=True)])
            )
            diff = float(max(np.max(np.abs(f - h)) for f, h in zip(forced, hf_logits, strict=True)))
            rows.append(
                {
                    "prompt": prompts[i][-1]["content"][:200],
                    "tokenizer_match": list(llama_ids) == list(ids),
                    "greedy_identical_tokens": same,
                    "tokens": n_tokens,
                    "top1_agreement": round(top1, 4),
                    "max_logit_diff": round(diff, 5),
                    "transformers": tokenizer.decode(hf_tokens),
                    "llama_cpp": tokenizer.decode(ll_tokens),
                }
            )
        if progress:
            progress(len(texts), len(texts))
    finally:
        llm.close() if hasattr(llm, "close") else None
    return _summarise(rows, qtype, n_tokens, "llama.cpp")


def _summarise(
    rows: list[dict], qtype: str, n_tokens: int, engine: str, logits: bool = True
) -> dict:
    identical = sum(r["greedy_identical_tokens"] == r["tokens"] for r in rows)
    tokenizer_ok = all(r.get("tokenizer_match", True) for r in rows)
    top1 = min((r["top1_agreement"] for r in rows), default=0.0)
    diff = max((r["max_logit_diff"] for r in rows), default=0.0)
    exact = qtype in EXACT_TYPES
    passed = tokenizer_ok and (identical == len(rows) if exact else top1 >= 0.5)
    summary = (
        f"verified in {engine}: {identical}/{len(rows)} prompts give the same first {n_tokens} "
        "greedy tokens as transformers"
        + (f"; top-1 agreement {top1:.0%}, max logit difference {diff:.4f}" if logits else "")
        + ("" if tokenizer_ok else "; the tokenizer splits some prompts differently")
    )
    if not passed:
        summary = "verification FAILED: " + summary
    return {
        "status": "passed" if passed else "failed",
        "engine": engine,
        "summary": summary,
        "prompts": rows,
        "identical_prompts": identical,
        "top1_agreement_min": top1,
        "max_logit_diff": diff,
        "tokenizer_match": tokenizer_ok,
    }


def onnx_check(
    folder: Path,
    model,
    tokenizer,
    template,
    prompts,
    n_tokens: int = 16,
    *,
    progress=None,
    log=None,
    cancel=None,
) -> dict:
    """The ONNX export's greedy tokens against transformers' on the same prompts."""
    from studio.core.export.onnx_export import onnx_greedy, release_session

    rows = []
    for i, p in enumerate(prompts):
        if progress:
            progress(i, len(prompts))
        ids = tokenizer(template.prompt(p), add_special_tokens=False)["input_ids"]
        hf_tokens, _ = _hf_greedy(model, ids, n_tokens)
        ort_tokens = onnx_greedy(folder, ids, n_tokens)
        same = identical_prefix(hf_tokens, ort_tokens)
        rows.append(
            {
                "prompt": p[-1]["content"][:200],
                "greedy_identical_tokens": same,
                "tokens": n_tokens,
                "top1_agreement": same / n_tokens,
                "max_logit_diff": 0.0,
            }
        )
    # The cached session holds the weights (and on Windows the file, which would block the rename).
    release_session()
    if progress:
        progress(len(prompts), len(prompts))
    return _summarise(rows, "f32", n_tokens, "onnxruntime", logits=False)
