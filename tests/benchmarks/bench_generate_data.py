"""Data generation speed: rows per second of `studio data generate answer` against a plain
`model.generate` loop over the same prompts.

Same model, same prompts, same sampling settings, and exactly N new tokens a row on both
sides (the end of turn held off: a random model's early end of turn would otherwise decide the
figures); Studio's side is the whole pipeline (input reading, meta, an fsync'd JSONL row each). Prints rows/s for the plain loop,
for Studio one prompt at a time (target >= 0.9x the loop) and for Studio with batches
(target >= 2x), with the tokens each side generated. Not collected by pytest; run it when
the machine is quiet:

    python tests/benchmarks/bench_generate_data.py [--prompts 32] [--tokens 64] [--batch 16]
        [--device cpu] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from studio.core.data.generate import GenerateOptions, generate_events  # noqa: E402
from studio.core.data.generate.backends import LocalBackend  # noqa: E402
from studio.core.tiny import build_model  # noqa: E402
from tests.benchmarks._common import TextGen  # noqa: E402


def plain_loop(backend: LocalBackend, prompts: list[str], tokens: int) -> tuple[float, int]:
    """One model.generate per prompt, with the generation config Studio uses."""
    chat, made = backend.chat, 0
    config = backend._generate_kwargs(tokens)["generation_config"]
    device = next(chat.model.parameters()).device
    start = time.perf_counter()
    for i, p in enumerate(prompts):
        ids = chat.prompt_ids([{"role": "user", "content": p}])
        torch.manual_seed(i)
        with torch.inference_mode():
            out = chat.model.generate(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                generation_config=config,
            )
        made += out.shape[1] - len(ids)
        chat.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    sync(device)
    return len(prompts) / (time.perf_counter() - start), made


def studio_run(model: str, src: Path, out: Path, tokens: int, batch: int, device: str):
    opts = GenerateOptions(
        mode="answer", input=str(src), output=str(out), model=model, device=device,
        max_new_tokens=tokens, batch_size=batch, overwrite=True,
    )  # fmt: skip
    start = rows = None
    for event in generate_events(opts):
        if event.type == "start":
            start = time.perf_counter()  # the model is loaded: time the generation only
        elif event.type == "row":
            rows = event.index + 1
        elif event.type == "error":
            raise SystemExit(event.message)
    elapsed = time.perf_counter() - start
    chars = sum(len(json.loads(line)["messages"][-1]["content"]) for line in out.open())
    return rows / elapsed, chars


def exact_lengths() -> None:
    """Exactly --tokens new tokens per row on both sides (see the docstring)."""
    make = LocalBackend._generate_kwargs

    def kwargs(self, max_new):
        out = make(self, max_new)
        out["generation_config"].min_new_tokens = max_new
        return out

    LocalBackend._generate_kwargs = kwargs


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    exact_lengths()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-data-"))
    gen = TextGen(0)
    prompts = [gen.conversation()[-2]["content"][:300] for _ in range(args.prompts)]
    model = str(build_model(tmp / "model", prompts, hidden_size=args.hidden, layers=args.layers,
                            intermediate_size=args.hidden * 3, heads=8, kv_heads=4))  # fmt: skip
    src = tmp / "prompts.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n")
    backend = LocalBackend(
        GenerateOptions(
            "answer",
            str(src),
            str(tmp / "x"),
            model=model,
            device=args.device,
            max_new_tokens=args.tokens,
        )  # fmt: skip
    )
    plain_loop(backend, prompts[:2], args.tokens)  # warm-up
    base, base_tokens = plain_loop(backend, prompts, args.tokens)
    one, _ = studio_run(model, src, tmp / "one.jsonl", args.tokens, 1, args.device)
    many, _ = studio_run(model, src, tmp / "many.jsonl", args.tokens, args.batch, args.device)
    # Again after Studio's runs, and the faster of the two: a noisy machine must not flatter us.
    base = max(base, plain_loop(backend, prompts, args.tokens)[0])
    backend.close()
    print(f"device {args.device}, {args.prompts} prompts, up to {args.tokens} new tokens each "
          f"(plain loop made {base_tokens}), model hidden {args.hidden} x {args.layers} layers")  # fmt: skip
    print(f"plain model.generate loop : {base:7.2f} rows/s")
    print(f"studio, batch size 1      : {one:7.2f} rows/s  ({one / base:.2f}x; target >= 0.9x)")
    print(f"studio, batch size {args.batch:<3}    : {many:7.2f} rows/s  ({many / base:.2f}x; target >= 2x)")  # fmt: skip


if __name__ == "__main__":
    main()
