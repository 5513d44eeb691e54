"""Per-token latency: the ONNX export on onnxruntime against transformers, on the CPU.

A ~25M-parameter Llama with random weights, built here; the same chat prompt; greedy with
the KV cache, exactly N new tokens each (EOS ignored). Each decode step is timed on its
own; the figure is the median step over several alternating runs after a warm-up, with
the prompt's step (prefill) reported apart. The greedy tokens must be identical on every
side. Both exporters' graphs are measured. Not collected by pytest; run it when the
machine is quiet:

    python tests/benchmarks/bench_onnx.py [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import TextGen, wait_for_quiet  # noqa: E402

from studio.core.export.onnx_export import export_onnx, onnx_greedy, release_session  # noqa: E402
from studio.core.tiny import build_model  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short poem about the sea and the sky, please."}]
# ~26M parameters; the tokenizer is trained on synthetic text so that its vocabulary (and
# the output layer, a real part of each step) is the full 4096 rather than a few hundred.
SIZES = dict(hidden_size=512, intermediate_size=1408, layers=8, heads=8, kv_heads=2)


def step_times(run) -> tuple[list[int], float, list[float]]:
    """Tokens, the prompt's step and each later step, in seconds, from a run that calls
    `tick(token)` as each token is chosen."""
    stamps, tokens = [], []

    def tick(token: int) -> None:
        stamps.append(time.perf_counter())
        tokens.append(token)

    start = time.perf_counter()
    run(tick)
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return tokens, stamps[0] - start, steps


def hf_run(model, ids: list[int], n: int):
    """The same loop as onnx_greedy: the prompt in one forward, then one token a step."""

    def run(tick) -> None:
        cache, step = None, torch.tensor([ids])
        with torch.inference_mode():
            for _ in range(n):
                out = model(input_ids=step, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                tick(token)
                step = torch.tensor([[token]])

    return run


def ort_run(folder: Path, ids: list[int], n: int):
    def run(tick) -> None:
        onnx_greedy(folder, ids, n, on_token=tick)

    return run


def measure(runs: dict, n: int, repeats: int) -> dict:
    """Alternate the sides so load from other processes hits them alike."""
    for run in runs.values():  # warm-up: allocations, kernel choice, session graph caches
        run(lambda _t: None)
    results = {name: {"tokens": None, "prefill": [], "steps": []} for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            tokens, prefill, steps = step_times(run)
            r = results[name]
            assert r["tokens"] in (None, tokens), f"{name}: greedy tokens changed between runs"
            r["tokens"] = tokens
            r["prefill"].append(prefill)
            r["steps"].extend(steps)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-wait", action="store_true", help="measure even if the machine is busy")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    warnings.simplefilter("ignore", FutureWarning)  # transformers' `past_key_values` rename
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        texts = [TextGen(seed).words(2000) for seed in range(20)]
        model_dir = build_model(Path(tmp) / "model", texts, vocab_size=4096, **SIZES)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        n_params = sum(p.numel() for p in model.parameters())
        exports = {}
        for exporter in ("dynamo", "torchscript"):
            start = time.perf_counter()
            export_onnx(model_dir, Path(tmp) / exporter, exporter=exporter)
            exports[exporter] = time.perf_counter() - start
        if not args.no_wait:
            wait_for_quiet(max_cores=0.3, max_wait=300)
        load = os.getloadavg()
        runs = {"transformers": hf_run(model, ids, args.tokens)}
        # One session is cached at a time, so the two graphs take turns loading: measure
        # each graph in its own block rather than alternating them.
        results = measure(runs, args.tokens, args.repeats)
        for exporter in exports:
            name = f"onnxruntime ({exporter} graph)"
            results |= measure(
                {name: ort_run(Path(tmp) / exporter, ids, args.tokens)}, args.tokens, args.repeats
            )
        release_session()

    import onnxruntime

    print(
        f"\n{n_params / 1e6:.1f}M parameters, fp32, prompt {len(ids)} tokens, {args.tokens} new "
        f"tokens x {args.repeats} runs, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in load)}"
    )
    print("export time: " + ", ".join(f"{k} {v:.1f} s" for k, v in exports.items()) + "\n")
    base = statistics.median(results["transformers"]["steps"])
    reference = results["transformers"]["tokens"]
    head = ("backend", "ms/token (median)", "p90 ms/token", "prefill ms", "speed-up", "same tokens")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    ok = True
    for name, r in results.items():
        steps = sorted(r["steps"])
        med = statistics.median(steps)
        p90 = steps[int(0.9 * (len(steps) - 1))]
        same = r["tokens"] == reference
        ok &= same
        print(
            f"| {name} | {med * 1000:.2f} | {p90 * 1000:.2f} | "
            f"{statistics.median(r['prefill']) * 1000:.1f} | {base / med:.2f}x | {same} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
