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

import importlib.util
from pathlib import Path

from studio.core.export.errors import Cancelled

EXACT_TYPES = ("f32", "f16", "bf16", "q8_0")
"""Types whose greedy tokens must match transformers' for verification to pass."""
K_FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # llama.cpp's llama_ftype numbers


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def run_child(cmd: list[str], cancel, err_path: Path) -> tuple[int, list[str]]:
    """Run a llama.cpp helper process to its end (killed on cancel); its code and stderr lines.

    llama.cpp runs in its own process: a crash in it (some builds segfault on some CPUs) ends
    that process, never the export or the app, and its C-level log stays out of ours.
    """
    import subprocess

    # stderr to a file, not a pipe: a chatty child could fill a pipe and both would wait.
    with open(err_path, "wb") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
    while proc.poll() is None:
        if cancel and cancel():
            proc.kill()
            proc.wait()
            raise Cancelled()
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    err = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return proc.returncode, err


def quantize_k(src: Path, dst: Path, qtype: str, *, progress=None, log=None, cancel=None) -> None:
    """An F16 GGUF -> a K-quant GGUF with llama.cpp's own quantizer (in a child process)."""
    import sys

    if progress:
        progress(0, 1)
    cmd = [
        sys.executable,
        "-m",
        "studio.core.export.llama_probe",
        "--quantize",
        str(src),
        str(dst),
        str(K_FTYPES[qtype]),
    ]
    code, err = run_child(cmd, cancel, Path(dst).with_suffix(".stderr"))
    Path(dst).with_suffix(".stderr").unlink(missing_ok=True)
    if code != 0 or not Path(dst).is_file():
        why = f"signal {-code}" if code < 0 else (err[-1] if err else f"exit {code}")
        raise RuntimeError(f"llama.cpp could not quantize the model to {qtype.upper()} ({why})")
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
    """transformers here, llama.cpp in a child process (studio.core.export.llama_probe): a
    crash inside llama.cpp (some builds segfault on quantized types on some CPUs) ends the
    check, never the export or the app."""
    import json
    import sys
    import tempfile

    import numpy as np

    texts = [template.prompt(p) for p in prompts]
    id_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    hf = []
    for i, ids in enumerate(id_lists):
        if progress:
            progress(i, len(texts) + 1)
        hf.append(_hf_greedy(model, ids, n_tokens))
    with tempfile.TemporaryDirectory(prefix="studio-verify-") as scratch:
        job = Path(scratch) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "gguf": str(gguf_path),
                    "texts": texts,
                    "ids": id_lists,
                    "paths": [tokens for tokens, _ in hf],
                    "n_tokens": n_tokens,
                }
            ),
            encoding="utf-8",
        )
        out = Path(scratch) / "out.npz"
        cmd = [sys.executable, "-m", "studio.core.export.llama_probe", str(job), str(out)]
        code, err = run_child(cmd, cancel, Path(scratch) / "stderr.txt")
        if code != 0 or not out.is_file():
            how = (
                f"crashed (signal {-code})"
                if code < 0
                else f"failed ({err[-1] if err else f'exit {code}'})"
            )
            note = (
                f"not verified: llama.cpp {how} while running the GGUF; the file itself was written"
            )
            return {"status": "skipped", "reason": note, "summary": note, "engine": "llama.cpp"}
        got = np.load(out)
    rows = []
    for i, (ids, (hf_tokens, hf_logits)) in enumerate(zip(id_lists, hf, strict=True)):
        ll_tokens = [int(t) for t in got[f"greedy{i}"]]
        forced = got[f"forced{i}"]
        top1 = float(
            np.mean([int(np.argmax(f)) == t for f, t in zip(forced, hf_tokens, strict=True)])
        )
        diff = float(max(np.max(np.abs(f - h)) for f, h in zip(forced, hf_logits, strict=True)))
        rows.append(
            {
                "prompt": prompts[i][-1]["content"][:200],
                "tokenizer_match": [int(t) for t in got[f"tokens{i}"]] == list(ids),
                "greedy_identical_tokens": identical_prefix(hf_tokens, ll_tokens),
                "tokens": n_tokens,
                "top1_agreement": round(top1, 4),
                "max_logit_diff": round(diff, 5),
                "transformers": tokenizer.decode(hf_tokens),
                "llama_cpp": tokenizer.decode(ll_tokens),
            }
        )
    if progress:
        progress(len(texts) + 1, len(texts) + 1)
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
