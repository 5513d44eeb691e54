"""Dedupe speed: `find_duplicates` on 200,000 chat records vs `load_dataset` of the same file.

Run on its own (not collected by pytest):

    python tests/benchmarks/bench_dedupe.py [--records N] [--repeat K]

Target (issue 13): finding exact and near duplicates takes under 3x the time of reading the
file. The file: distinct conversations of Zipf-distributed words (_common.TextGen), plus 5%
exact copies (case and spacing changed) and 5% near copies (two words changed), so the
search has clusters to build. Prints both times, the ratio and the copies found.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TextGen  # noqa: E402
from bench_import import best_times  # noqa: E402

from studio.core.data.dedupe import find_duplicates  # noqa: E402
from studio.core.data.formats import load_dataset  # noqa: E402

TARGET_RATIO = 3.0


def write_file(path: Path, records: int, seed: int = 0) -> int:
    """Returns the number of planted copies."""
    gen, rng = TextGen(seed), random.Random(seed + 1)
    rows: list[dict] = []
    planted = 0
    for _ in range(records):
        r = rng.random()
        if rows and r < 0.1:
            src = rng.choice(rows)["messages"]
            answer = src[-1]["content"]
            if r < 0.05:
                answer = answer.upper().replace(" ", "  ")
            else:
                words = answer.split()
                for _ in range(2):
                    words[rng.randrange(len(words))] = gen.words(1).rstrip(".")
                answer = " ".join(words)
            rows.append({"messages": src[:-1] + [{"role": "assistant", "content": answer}]})
            planted += 1
        else:
            rows.append({"messages": gen.conversation()})
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return planted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.jsonl"
        planted = write_file(path, args.records)
        records = load_dataset(path).records
        found = []
        load, dedupe = best_times(
            [lambda: load_dataset(path), lambda: found.append(find_duplicates(records))],
            args.repeat,
        )
        clusters = found[-1]
        dropped = sum(len(c.drop) for c in clusters)
        size_mb = path.stat().st_size / 1e6
    ratio = dedupe / load
    print(
        f"{args.records} records, {size_mb:.0f} MB: load_dataset {load:.2f} s, "
        f"find_duplicates {dedupe:.2f} s, ratio {ratio:.2f} (target < {TARGET_RATIO}); "
        f"{len(clusters)} clusters, {dropped} copies found of {planted} planted"
    )
    print("OK" if ratio < TARGET_RATIO else f"TOO SLOW: ratio {ratio:.2f}")
    return 0 if ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
