"""Distillation step time against SFT's on the same tokens.

Run on its own (not collected by pytest), on a quiet machine (check `uptime` first):

    python tests/benchmarks/bench_distill.py           # the full benchmark (~5 minutes, 2 CPU cores)
    python tests/benchmarks/bench_distill.py --quick   # a reduced size to check that it works

Setting: the student is bench_optim's 5.2M-parameter Llama-style model (studio.core.tiny:
hidden 256, 4 layers, intermediate 688, vocabulary 2,000 trained on the data); generated
instruction conversations (tests/benchmarks/_common.TextGen); LoRA r16 on all linear layers,
seq_len 256, packing on, 4 rows a step, seed 42, float32 on the CPU. Teachers share the
student's tokenizer (its files are copied over): one of the student's own size, one about 4x
bigger (hidden 512, 6 layers, intermediate 1376).

Every run trains the same rows in the same order (the data order is a function of the seed),
so SFT and distillation see exactly the same tokens. A step's time is read from the Step
events (elapsed_s), over the steps after the first five (warm-up), in a child process each
(`python -m studio train`), with its peak RSS from os.wait4. `--rounds R` runs every
configuration R times, interleaved, and keeps each one's fastest round: on a shared machine
the other processes only ever slow a run down. Printed: ms a step, the ratio to SFT, tokens
a second, peak RSS, and how busy the rest of the machine was during the kept round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TextGen, fmt, run_child, shorten_to, wait_for_quiet  # noqa: E402

STUDENT = dict(hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=688)
BIG = dict(hidden_size=512, layers=6, heads=8, kv_heads=4, intermediate_size=1376)
VOCAB = 2000
WARMUP = 5


def setup(work: Path, n_train: int, seq_len: int) -> dict:
    from transformers import AutoTokenizer

    from studio.core.tiny import build_model

    gen = TextGen(42)
    convs = [gen.conversation() for _ in range(n_train)]
    texts = [m["content"] for c in convs for m in c]
    student = build_model(work / "student", texts, seed=42, vocab_size=VOCAB, **STUDENT)
    tok = AutoTokenizer.from_pretrained(student)
    teachers = {}
    for name, kw, seed in (("same size", STUDENT, 7), ("4x bigger", BIG, 8)):
        folder = build_model(
            work / name.replace(" ", "_"), texts, seed=seed, vocab_size=VOCAB, **kw
        )
        for f in folder.iterdir():  # the student's tokenizer, whatever BPE training gave
            if "token" in f.name or f.name == "chat_template.jinja":
                f.unlink()
        tok.save_pretrained(folder)
        teachers[name] = str(folder)
    convs = [shorten_to(tok, c, seq_len) for c in convs]
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    return {"student": str(student), "data": str(data), "teachers": teachers}


def run(d: dict, out: Path, steps: int, *flags: str) -> dict:
    cmd = [sys.executable, "-m", "studio", "train", "--model", d["student"], "--data", d["data"],
           "--output", str(out), "--max-steps", str(steps), "--batch-size", "4",
           "--seq-len", "256", "--lora-rank", "16", "--lora-alpha", "32", "--lr", "1e-3",
           "--seed", "42", "--save-every", str(steps), "--quiet", *flags]  # fmt: skip
    r = run_child(cmd, dict(os.environ, OMP_NUM_THREADS="2"))
    if r["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r['output'][-3000:]}")
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    steps_ev = [e for e in events if e["type"] == "step"]
    a, b = steps_ev[WARMUP - 1], steps_ev[-1]
    return {
        "step_ms": (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) * 1000,
        "rss_mb": r["rss_mb"],
        "others": r["others"],
        "tokens_per_s": sum(e["tokens_per_s"] for e in steps_ev[WARMUP:])
        / (len(steps_ev) - WARMUP),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a reduced size to check that it works")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1, help="keep the fastest of R rounds")
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="CORES",
                    help="before each run, wait until others use at most this many cores")  # fmt: skip
    args = ap.parse_args()
    steps = args.steps or (12 if args.quick else 40)
    work = Path(tempfile.mkdtemp(prefix="bench_distill_"))
    try:
        d = setup(work, 60 if args.quick else 200, 256)
        runs = {"SFT": ()}
        for name, path in d["teachers"].items():
            runs[f"distill, teacher {name}"] = ("--mode", "distill", "--teacher", path)
        runs["distill, 4x teacher, jsd"] = ("--mode", "distill", "--teacher",
                                            d["teachers"]["4x bigger"], "--distill-loss", "jsd")  # fmt: skip
        print(f"{steps} steps a run, 4 rows of up to 256 tokens a step, float32 on the CPU, "
              f"fastest of {args.rounds} round(s)\n")  # fmt: skip
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, flags in runs.items():
                if args.wait_quiet is not None:
                    wait_for_quiet(args.wait_quiet, 600)
                r = run(d, work / name.replace(" ", "_").replace(",", ""), steps, *flags)
                shutil.rmtree(work / name.replace(" ", "_").replace(",", ""), ignore_errors=True)
                if name not in best or r["step_ms"] < best[name]["step_ms"]:
                    best[name] = r
        print(f"{'run':<30}{'ms/step':>9}{'vs SFT':>8}{'tokens/s':>10}{'peak RSS MB':>13}"
              f"{'others':>8}")  # fmt: skip
        base = best["SFT"]
        for name, r in best.items():
            print(f"{name:<30}{r['step_ms']:>9.0f}{r['step_ms'] / base['step_ms']:>7.2f}x"
                  f"{r['tokens_per_s']:>10.0f}{r['rss_mb']:>13.0f}{fmt(r['others'], '.2f'):>8}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
