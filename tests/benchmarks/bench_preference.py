"""Preference tuning's step time: a DPO step against an SFT step on the same tokens.

Run on its own (not collected by pytest), on a quiet machine (check `uptime` first):

    python tests/benchmarks/bench_preference.py            # ~1 minute on 2 CPU cores
    python tests/benchmarks/bench_preference.py --quick    # a reduced size to check that it works
    python tests/benchmarks/bench_preference.py --wait-quiet 0.3   # what the README quotes

The model is bench_train's tiny Llama (byte-level BPE vocabulary of 4,000 trained on the data,
hidden 256, 4 layers, intermediate 688, float32 on the CPU; on CUDA when there is one) with
LoRA r16 on all linear layers. The data: generated prompts (8-60 words) each with two answers
of 8-200 words (log-uniform, so many short and a long tail), rendered with the ChatML template.

Both objectives train on exactly the same rows: the pairs' two sequences (prompt + chosen,
prompt + rejected), packed by `pair_rows` into rows of up to 2 x seq_len, labels on the
answers only. SFT is the plain token loss on those rows (studio.core.objective.LossFn); DPO is
studio.core.preference.PreferenceLoss: one forward for every sequence of the batch with the
adapter on, plus one forward without gradient with the adapter disabled (the reference). A
step is forward, backward and an AdamW update over `--batch` rows; the figure is the median
step time, and the ratio is the median of per-batch ratios: the objectives take turns on
each batch, so that a noisy spell on a shared machine hits them all. ORPO and
SimPO need no reference and are shown too.

Goal (issue 11): DPO step / SFT step <= 2.2. In theory a forward costs about a third of a
forward + backward, so the reference adds about a third: ~1.35x.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TextGen, wait_for_quiet  # noqa: E402

GOAL = 2.2


def make_data(work: Path, n: int, seed: int) -> tuple[Path, Path]:
    """A tiny model whose tokenizer is trained on the data, and a JSONL file of pairs."""
    from studio.core.tiny import build_model

    gen = TextGen(seed)
    rng = gen.rng
    rows = []
    for _ in range(n):
        answer = lambda: gen.words(int(math.exp(rng.uniform(math.log(8), math.log(200)))))  # noqa: E731
        rows.append(
            {"prompt": gen.words(rng.randint(8, 60)), "chosen": answer(), "rejected": answer()}
        )
    texts = [r[k] for r in rows for k in ("prompt", "chosen", "rejected")]
    model = build_model(work / "model", texts, vocab_size=4000, hidden_size=256, layers=4,
                        heads=4, kv_heads=4, intermediate_size=688, seed=seed)  # fmt: skip
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return model, data


def setup(model_dir: Path, data: Path, seq_len: int):
    import torch

    from studio.core.config import LoraConfig, ModelConfig
    from studio.core.data.formats import load_dataset
    from studio.core.data.pairs import build_pair_examples, pair_rows
    from studio.core.data.templates import resolve_template
    from studio.core.lora import apply_lora
    from studio.core.models import load_model

    loaded = load_model(ModelConfig(path=str(model_dir), dtype="float32"))
    torch.manual_seed(0)
    model = apply_lora(loaded.model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0)).train()
    tok = loaded.tokenizer
    examples, stats = build_pair_examples(
        load_dataset(data).records, tok, resolve_template(tok), seq_len, overlong="drop"
    )
    rows = pair_rows([len(e) for e in examples], seq_len, seed=0, packing=True)
    return model, tok, examples, rows, loaded.device


def make_step(objective, examples, rows, batch: int, pad_id: int, device):
    """A function that times one optimizer step (forward, backward, AdamW) on batch s."""
    import torch

    params = [p for p in objective.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step(s: int) -> float:
        chosen = [rows[(s * batch + i) % len(rows)] for i in range(batch)]
        b = {k: v.to(device) for k, v in objective.collate(examples, chosen, pad_id).items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, n = objective(b)
        (loss / max(1, n)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a reduced size to check that it works")
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2, help="rows a step")
    ap.add_argument("--steps", type=int, default=6, help="steps a round and objective")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="CORES")
    ap.add_argument("--wait-max", type=float, default=600)
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.seq_len, args.steps, args.rounds = 24, 256, 2, 1

    import torch

    from studio.core.objective import LossFn
    from studio.core.preference import PreferenceLoss

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = make_data(Path(tmp), args.pairs, seed=42)
        model, tok, examples, rows, device = setup(model_dir, data, args.seq_len)
    tokens = sum(len(e) for e in examples) / len(rows)
    print(f"{len(examples) // 2} pairs in {len(rows)} rows (mean {tokens:.0f} tokens a row), "
          f"{args.batch} rows a step, device {device}, {torch.get_num_threads()} threads")  # fmt: skip
    objectives = {
        "sft": LossFn(model),
        "dpo": PreferenceLoss(model, "dpo", 0.1),
        "orpo": PreferenceLoss(model, "orpo", 0.1),
        "simpo": PreferenceLoss(model, "simpo", 2.0, 0.5),
    }
    # SFT reads the same packed rows with its own collate (no sequence index needed). The
    # objectives take turns on each batch, so a noisy moment on a shared machine hits all of
    # them: the ratio is the median of per-batch ratios.
    steps = {k: make_step(fn, examples, rows, args.batch, tok.pad_token_id, device)
             for k, fn in objectives.items()}  # fmt: skip
    for step in steps.values():  # warm-up: allocator, first-call checks
        step(0)
    per_step: dict[str, list[float]] = {k: [] for k in objectives}
    for r in range(args.rounds):
        if args.wait_quiet is not None:
            wait_for_quiet(args.wait_quiet, args.wait_max)
        for s in range(r * args.steps, (r + 1) * args.steps):
            for name, step in steps.items():
                per_step[name].append(step(s))
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {statistics.median(v[-args.steps:]) * 1000:.0f} ms" for k, v in per_step.items()))  # fmt: skip
    print("\n| objective | median step | vs SFT (median of per-batch ratios) |\n|---|---|---|")
    for name, times in per_step.items():
        paired = statistics.median(x / t for x, t in zip(times, per_step["sft"], strict=True))
        print(f"| {name} | {statistics.median(times) * 1000:.0f} ms | {paired:.2f}x |")
    ratio = statistics.median(d / t for d, t in zip(per_step["dpo"], per_step["sft"], strict=True))
    print(f"\nDPO step / SFT step on the same tokens: {ratio:.2f}x "
          f"({'PASS' if ratio <= GOAL else 'FAIL'}, goal <= {GOAL}x)")  # fmt: skip


if __name__ == "__main__":
    main()
