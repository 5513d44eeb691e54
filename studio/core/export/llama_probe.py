"""llama.cpp in its own process: the llama.cpp half of a GGUF check (verify.verify_gguf),
and K-quantization (verify.quantize_k).

    python -m studio.core.export.llama_probe JOB.json OUT.npz
    python -m studio.core.export.llama_probe --quantize SRC.gguf DST.gguf FTYPE

For each prompt: llama.cpp's tokens for the prompt text, its greedy tokens from the given
ids, and its logits along transformers' greedy path (teacher forcing). One token per batch:
some llama.cpp builds crash evaluating several tokens at once on quantized types.
"""

from __future__ import annotations

import json
import os
import sys


def probe(job: dict) -> dict:
    import numpy as np
    from llama_cpp import Llama

    n = job["n_tokens"]
    n_ctx = max(len(i) for i in job["ids"]) + n + 8
    llm = Llama(
        job["gguf"],
        n_ctx=n_ctx,
        n_batch=1,
        n_ubatch=1,
        logits_all=True,
        verbose=False,
        n_threads=os.cpu_count() or 1,
        type_k=0,  # an F32 KV cache: F32/F16 files then match transformers to ~1e-6
        type_v=0,
    )
    out = {}
    for i, (text, ids, path) in enumerate(zip(job["texts"], job["ids"], job["paths"], strict=True)):
        out[f"tokens{i}"] = np.array(
            llm.tokenize(text.encode("utf-8"), add_bos=False, special=True), dtype=np.int64
        )
        llm.reset()
        llm.eval(ids)
        greedy = []
        for _ in range(n):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            llm.eval([token])
        out[f"greedy{i}"] = np.array(greedy, dtype=np.int64)
        llm.reset()
        llm.eval(ids + path[:-1])
        start = len(ids) - 1
        out[f"forced{i}"] = np.stack([llm.scores[start + k] for k in range(len(path))])
    return out


def quantize(src: str, dst: str, ftype: int) -> int:
    """llama.cpp's own quantizer (llama_model_quantize), e.g. ftype 15 for Q4_K_M."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)


def main(argv: list[str]) -> int:
    import numpy as np

    if argv and argv[0] == "--quantize":
        null = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2)
        os.dup2(null, 2)
        rc = quantize(argv[1], argv[2], int(argv[3]))
        os.dup2(saved, 2)
        if rc != 0:
            print(f"llama_model_quantize returned {rc}", file=sys.stderr)
        return 0 if rc == 0 else 1
    job = json.loads(open(argv[0], encoding="utf-8").read())
    # llama.cpp logs its load on the C stderr; only our own last line should reach the parent.
    null = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(null, 2)
    try:
        result = probe(job)
    except Exception as e:
        os.dup2(saved, 2)
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
