"""Generation speed: Studio's token loop against plain `model.generate`.

Same model, same prompt, greedy, exactly N new tokens each (EOS ignored on both sides),
median of several alternating runs after a warm-up. Prints tokens/s for both, their ratio
(median of paired ratios; target >= 0.95) and the time to the first token. Not collected by pytest; run it when the machine is quiet:

    python tests/benchmarks/bench_generate.py [--tokens 128] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from studio.core.generation import Generation, GenerationSettings  # noqa: E402
from studio.core.infer import load_chat_model  # noqa: E402
from studio.core.paths import demo_dir  # noqa: E402
from studio.core.tiny import build_model  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short poem about the sea and the sky, please."}]


class FirstTokenClock(BaseStreamer):
    """Notes when generate() hands over its first new token (the first put() is the prompt)."""

    def __init__(self):
        self.calls = 0
        self.first = 0.0

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self):
        pass


def bench_generate(model, ids, n: int) -> tuple[float, float]:
    config = copy.deepcopy(model.generation_config)
    config.eos_token_id = None  # exactly n tokens, like the Studio run below
    config.do_sample, config.max_new_tokens, config.min_new_tokens = False, n, None
    clock = FirstTokenClock()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids], device=model.device), generation_config=config, streamer=clock
        )
    sync(model)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - len(ids) == n
    return n / elapsed, clock.first - start


def bench_studio(chat, ids, n: int) -> tuple[float, float]:
    settings = GenerationSettings(temperature=0, max_new_tokens=n)
    gen = Generation(chat.model, chat.tokenizer, ids, settings)  # no stop ids: exactly n tokens
    for _ in gen:
        pass
    sync(chat.model)
    assert gen.completion_tokens == n
    return gen.tokens_per_s, gen.ttft_s


def sync(model) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def compare(studio, hf, repeats: int) -> tuple[float, float, float, float, float]:
    """Median tokens/s of each, median of the paired ratios, median first-token times.

    Runs alternate and each ratio is taken within a pair, so load from other processes on a
    shared machine hits both sides alike.
    """
    studio(), hf()  # warm-up: first-call allocations and kernel selection
    runs = [(studio(), hf()) for _ in range(repeats)]
    ratio = statistics.median(s[0] / h[0] for s, h in runs)
    s_tps, s_ttft, h_tps, h_ttft = (
        statistics.median(r[i][j] for r in runs) for i in (0, 1) for j in (0, 1)
    )
    return s_tps, h_tps, ratio, s_ttft, h_ttft


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "demo (2M)": str(demo_dir() / "model"),
            "small llama (25M)": str(
                build_model(
                    Path(tmp) / "small",
                    hidden_size=384,
                    intermediate_size=1024,
                    layers=8,
                    heads=6,
                    kv_heads=2,
                    vocab_size=4096,
                )
            ),
        }
        rows = []
        for name, path in models.items():
            chat = load_chat_model(path, device=args.device)
            ids = chat.prompt_ids(PROMPT)
            studio_tps, hf_tps, ratio, studio_ttft, hf_ttft = compare(
                lambda c=chat, i=ids: bench_studio(c, i, args.tokens),
                lambda c=chat, i=ids: bench_generate(c.model, i, args.tokens),
                args.repeats,
            )
            row = (name, chat.device, len(ids), studio_tps, hf_tps, ratio, studio_ttft, hf_ttft)
            rows.append(row)
    print(
        f"\ngreedy, {args.tokens} new tokens, median of {args.repeats} alternating runs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    head = (
        "model",
        "device",
        "prompt",
        "studio tok/s",
        "generate tok/s",
        "ratio",
        "studio TTFT",
        "generate TTFT",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, device, plen, s, h, ratio, st, ht in rows:
        print(
            f"| {name} | {device} | {plen} | {s:,.0f} | {h:,.0f} | {ratio:.2f}x | {st * 1000:.1f} ms | {ht * 1000:.1f} ms |"
        )
    return 0 if all(r[5] >= 0.95 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
