"""Helpers for the benchmarks: synthetic instruction data, and child processes timed on their own.

Timings on a shared machine are only worth something when nothing else runs: `run_child`
reports how busy the rest of the machine was while a child ran, and `wait_for_quiet` waits
for a quiet spell before a measurement.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- synthetic data


FUNCTION_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this from "
    "have or by one had not but what all were when we there can an your which their said if "
    "will each about how up out them then she many some so these would other into has more"
).split()
ONSETS = "b c d f g h l m n p r s t v br st tr pl sh ch".split()
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st"]
TOPICS = [
    "Explain",
    "Summarise",
    "Describe",
    "Compare",
    "List the steps to",
    "Write a note about",
    "Why does",
]


def make_lexicon(rng: random.Random, n: int = 2500) -> list[str]:
    words = set()
    while len(words) < n:
        syll = rng.choice([1, 2, 2, 3, 3, 4])
        words.add(
            "".join(
                rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syll)
            )
        )
    return FUNCTION_WORDS + sorted(words)


class TextGen:
    """Zipf-distributed words in sentences: enough structure for a loss to fall."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lexicon = make_lexicon(self.rng)
        weights = [1.0 / (r + 1) ** 1.05 for r in range(len(self.lexicon))]
        total = sum(weights)
        self.cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def words(self, n: int) -> str:
        out, sent = [], 0
        for _ in range(n):
            w = self.lexicon[
                min(bisect.bisect_left(self.cum, self.rng.random()), len(self.lexicon) - 1)
            ]
            if sent == 0:
                w = w.capitalize()
            sent += 1
            if sent >= self.rng.randint(6, 18):
                w += "."
                sent = 0
            else:
                w += "," if self.rng.random() < 0.05 else ""
            out.append(w)
        return " ".join(out).rstrip(",") + ("" if out and out[-1].endswith(".") else ".")

    def conversation(self) -> list[dict]:
        rng = self.rng
        msgs = []
        if rng.random() < 0.3:
            msgs.append(
                {
                    "role": "system",
                    "content": "You are a helpful assistant. " + self.words(rng.randint(3, 12)),
                }
            )
        prompt = f"{rng.choice(TOPICS)} {self.words(rng.randint(4, 12))}"
        if rng.random() < 0.5:
            prompt += "\n\n" + self.words(rng.randint(10, 90))
        msgs.append({"role": "user", "content": prompt})
        # Reply lengths log-uniform between ~8 and ~380 words: many short, a long tail.
        n = int(math.exp(rng.uniform(math.log(8), math.log(380))))
        msgs.append({"role": "assistant", "content": self.words(n)})
        return msgs


def rendered_length(tok, msgs: list[dict]) -> int:
    return len(
        tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    )


def shorten_to(tok, msgs: list[dict], max_tokens: int) -> list[dict]:
    """Drop words from the reply until the rendered conversation fits (no truncation anywhere)."""
    while rendered_length(tok, msgs) > max_tokens:
        words = msgs[-1]["content"].split()
        cut = max(1, len(words) // 10)
        msgs[-1] = {"role": "assistant", "content": " ".join(words[:-cut]).rstrip(",.") + "."}
    return msgs


# ----------------------------------------------------------------------------- processes


def busy_cpu_s() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (guest time is already in user)
    return busy / os.sysconf("SC_CLK_TCK")


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run a child; wall time around it and its own peak RSS (os.wait4, so only this child).

    `others` is how many cores everything else on the machine kept busy meanwhile (machine
    busy time minus the child's own CPU time, over the wall time): 0 on a quiet machine.
    """
    load = os.getloadavg()[0]
    busy0 = busy_cpu_s()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # MiB
    cpu = usage.ru_utime + usage.ru_stime
    busy1 = busy_cpu_s()
    others = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - cpu) / wall)
    return {
        "wall_s": wall,
        "rss_mb": rss,
        "rc": p.returncode,
        "output": out.decode(errors="replace"),
        "load_before": load,
        "cpu_s": cpu,
        "others": others,
    }


def wait_for_quiet(max_cores: float, max_wait: float, window: float = 10.0) -> None:
    """Wait until other processes keep fewer than `max_cores` cores busy over a window."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = busy_cpu_s()
        time.sleep(window)
        b1 = busy_cpu_s()
        if b0 is None or b1 is None:
            return
        busy = (b1 - b0) / window
        if busy <= max_cores:
            print(
                f"machine quiet: {busy:.2f} cores busy, load average "
                f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                flush=True,
            )
            return
        if time.monotonic() > deadline:
            print(
                f"WARNING: the machine is still busy ({busy:.2f} cores); timings are noisy",
                flush=True,
            )
            return
        time.sleep(max(0.0, 60 - window))


def fmt(x, spec=".1f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
