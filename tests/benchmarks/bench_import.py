"""Import speed and memory: `load_dataset` on a 200,000-record JSONL (~60 MB) vs bare json.loads.

Run on its own (not collected by pytest):

    python tests/benchmarks/bench_import.py [--records N] [--repeat K]

Target (issue 2): load_dataset takes at most 3x the time of a plain `json.loads` loop over
the same file, with peak memory proportional to the file size. Prints one line per format.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from studio.core.data.formats import load_dataset  # noqa: E402

TARGET_RATIO = 3.0
WORDS = "the of and to in is you that it he was for on are as with his they at be this from 你好 世界 🙂".split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_file(path: Path, fmt: str, records: int, seed: int = 0) -> None:
    """About 300 bytes a record, so 200k records make ~60 MB."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(records):
            if fmt == "alpaca":
                row = {
                    "instruction": _sentence(rng, 20),
                    "input": _sentence(rng, 10) if rng.random() < 0.5 else "",
                    "output": _sentence(rng, 36),
                }
            else:
                row = {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": _sentence(rng, 16)},
                        {"role": "assistant", "content": _sentence(rng, 28)},
                    ]
                }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def bare_loop(path: Path) -> int:
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def best_times(fns, repeat: int) -> list[float]:
    """Best of `repeat` runs of each function, interleaved so a noisy neighbour hits both."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    try:
        import resource

        # ru_maxrss is KiB on Linux, bytes on macOS.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    except ImportError:  # Windows
        return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="alpaca,messages")
    parser.add_argument("--no-memory", action="store_true", help="skip the (slow) tracemalloc pass")
    args = parser.parse_args()

    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"{fmt}.jsonl"
            write_file(path, fmt, args.records)
            size_mb = os.path.getsize(path) / 1e6

            bare, ours = best_times(
                [lambda p=path: bare_loop(p), lambda p=path: load_dataset(p)], args.repeat
            )
            ratio = ours / bare
            worst = max(worst, ratio)
            ds = load_dataset(path)
            assert ds.kept == args.records and not ds.problems, (ds.kept, ds.problems[:3])
            del ds
            line = (
                f"{fmt:9s} {args.records} records, {size_mb:.1f} MB: json.loads loop {bare:.2f} s, "
                f"load_dataset {ours:.2f} s, ratio {ratio:.2f} (target <= {TARGET_RATIO})"
            )
            if not args.no_memory:
                gc.collect()
                tracemalloc.start()
                ds = load_dataset(path)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                del ds
                line += f", peak traced memory {peak / 1e6:.0f} MB ({peak / 1e6 / size_mb:.1f}x the file)"
            print(line, flush=True)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    print("OK" if worst <= TARGET_RATIO else f"TOO SLOW: worst ratio {worst:.2f}")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
