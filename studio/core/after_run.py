"""After a run: did the model change? Held-out prompts answered by the base and the tuned model.

The first thing to check after a fine-tune is whether the model now answers in the trained
format and ends its turn, where the base rambles to the token limit. `compare_with_base`
answers a few prompts the run did not train on (its validation split, else records of its
data) with the base model and with the adapter, greedily and briefly, and counts the answers
that stopped at the end-of-turn token. The Train page shows the result after a run; the
tests and `studio train --samples` use the same code. No Qt here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.core.config import RunConfig
from studio.core.data.records import Record

SAMPLES_FILE = "samples.json"
"""Where a run folder keeps its comparison, so reopening the run shows it again at once."""

MAX_NEW_TOKENS = 48
"""Short answers: enough for a trained answer to end, few enough to stay quick on a CPU."""


@dataclass
class Sample:
    """One prompt, the data's own answer, and what each model answered."""

    messages: list[dict]
    """The conversation up to the answer (system and user turns, earlier turns too)."""
    reference: str
    """The answer in the data."""
    base: str = ""
    base_stopped: bool = False
    """True when the base ended its turn (end-of-turn token) within the token limit."""
    tuned: str = ""
    tuned_stopped: bool = False

    @property
    def prompt(self) -> str:
        """The last user message: what a person would read as the question."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class Comparison:
    samples: list[Sample] = field(default_factory=list)
    max_new_tokens: int = MAX_NEW_TOKENS
    source: str = ""
    """Where the prompts came from: "validation" (held out) or "training" (no split)."""

    @property
    def base_stops(self) -> int:
        return sum(s.base_stopped for s in self.samples)

    @property
    def tuned_stops(self) -> int:
        return sum(s.tuned_stopped for s in self.samples)

    def learned_to_stop(self) -> bool:
        """Most tuned answers end their turn, and clearly more than the base's do."""
        n = len(self.samples)
        return n > 0 and self.tuned_stops * 2 > n and self.tuned_stops > self.base_stops

    def summary(self) -> str:
        """One sentence for the run's summary line."""
        n = len(self.samples)
        if not n:
            return "No prompt in the data to try the model on."
        counts = (
            f"{self.tuned_stops} of {n} tuned answers ended their turn within "
            f"{self.max_new_tokens} tokens (base model: {self.base_stops} of {n})"
        )
        if self.learned_to_stop():
            return f"The model learned to end its answers: {counts}."
        return (
            f"The model has not learned to end its answers: {counts}. "
            "Train longer (more epochs or steps) or check the chat template."
        )

    def short(self) -> str:
        """The verdict in a few words, for the end of the run's summary line."""
        n = len(self.samples)
        counts = f"tuned {self.tuned_stops} of {n}, base {self.base_stops} of {n}"
        if self.learned_to_stop():
            return f"It learned to end its answers ({counts})."
        return f"It has not learned to end its answers ({counts}): train longer."

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        samples = [Sample(**s) for s in d.get("samples", [])]
        return cls(samples, int(d.get("max_new_tokens", MAX_NEW_TOKENS)), d.get("source", ""))

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / SAMPLES_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
        return path


def load_comparison(run_dir: str | Path) -> Comparison | None:
    """The comparison saved in a run folder, or None (none yet, or an unreadable file)."""
    path = Path(run_dir) / SAMPLES_FILE
    try:
        return Comparison.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


# --- choosing prompts ---------------------------------------------------------------------


def prompt_of(record: Record) -> Sample | None:
    """The record as a prompt (everything before its last answer) and that answer."""
    msgs = record.messages or []
    if record.is_pair:  # the prompt's turns end with the user's; the better answer is the reference
        return Sample([dict(m) for m in msgs], record.chosen)
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    if last < 1 or not any(m["role"] == "user" for m in msgs[:last]):
        return None
    return Sample([dict(m) for m in msgs[:last]], msgs[last]["content"])


def spread(items: list, n: int) -> list:
    """n items evenly spaced through the list (first and last included), in order."""
    if len(items) <= n:
        return list(items)
    if n <= 1:
        return items[:n]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def pick_prompts(records: list[Record], n: int) -> list[Sample]:
    """Up to n prompts from records, each asking something different, spread over the data.

    Short prompts first: the point is to see the answer, and a long prompt also leaves less
    of a small model's context for it.
    """
    seen, found = set(), []
    for record in records:
        sample = prompt_of(record)
        if sample is None or sample.prompt.strip().lower() in seen:
            continue
        seen.add(sample.prompt.strip().lower())
        found.append(sample)
    short = [s for s in found if len(s.prompt) <= 200] or found
    # One question of each kind before a second of any ("What is 3 plus 4?" and "What is
    # 9 plus 1?" are one kind): five sums say less about a model than five different asks.
    kinds: dict[str, list[Sample]] = {}
    for s in short:
        kinds.setdefault(_kind(s.prompt), []).append(s)
    groups = [spread(group, n) for group in spread(list(kinds.values()), n)]
    picked = []
    while len(picked) < n and any(groups):
        for group in groups:
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return picked


def _kind(prompt: str) -> str:
    """A prompt's shape: its first words with numbers blanked out."""
    words = re.sub(r"\d+", "#", prompt.lower()).split()
    return " ".join(words[:4])


def held_out_prompts(cfg: RunConfig, n: int = 5) -> tuple[list[Sample], str]:
    """Prompts the run did not train on when it held some out; else prompts from its data.

    Returns (samples, source) with source "validation" or "training".
    """
    from studio.core.data.split import load_split

    split = load_split(cfg.data, cfg.train.seed)
    held = pick_prompts(list(split.val), n)
    if held:
        return held, "validation"
    return pick_prompts(split.train.records, n), "training"


def suggested_prompts(path: str | Path, n: int = 4, fmt: str = "auto", columns=None) -> list[str]:
    """Questions from a data file for the Chat page to offer (the last user turn of each)."""
    from studio.core.data.formats import load_dataset

    ds = load_dataset(path, fmt, columns)
    return [s.prompt for s in pick_prompts(ds.records, n)]


# --- answering ----------------------------------------------------------------------------

Progress = Callable[[int, int], None]


def answer(chat_model, messages: list[dict], max_new_tokens: int, cancel=None) -> tuple[str, bool]:
    """A greedy answer and whether it ended its turn (not the token limit)."""
    from studio.core.generation import GenerationSettings

    settings = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
    with chat_model.lock:
        gen = chat_model.chat(messages, settings, cancel)
        for _ in gen:
            pass
    return gen.text.strip(), gen.finish_reason == "stop"


def compare_with_base(
    run_dir: str | Path,
    n: int = 5,
    *,
    samples: list[Sample] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    device: str = "auto",
    progress: Progress | None = None,
    cancel=None,
    save: bool = True,
) -> Comparison:
    """Answer n held-out prompts with the run's base model and with its adapter.

    One copy of the base weights serves both (the base answers with the adapter switched
    off). `progress(done, total)` is called after loading and after each answer; with
    `save` the result goes to RUN/samples.json.
    """
    from studio.core.infer import load_chat_model

    report = progress or (lambda done, total: None)
    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "run.yaml")
    source = "given"
    if samples is None:
        samples, source = held_out_prompts(cfg, n)
    total = 1 + 2 * len(samples)
    report(0, total)
    tuned = load_chat_model(cfg.model.path, run_dir, device=device, dtype=cfg.model.dtype,
                            quant=cfg.model.quant, trust_remote_code=cfg.model.trust_remote_code)  # fmt: skip
    try:
        base = load_chat_model(cfg.model.path, device=device, dtype=cfg.model.dtype,
                               quant=cfg.model.quant, template=cfg.data.template,
                               trust_remote_code=cfg.model.trust_remote_code, share_with=tuned)  # fmt: skip
        report(1, total)
        done = 1
        for s in samples:
            s.base, s.base_stopped = answer(base, s.messages, max_new_tokens, cancel)
            done += 1
            report(done, total)
            s.tuned, s.tuned_stopped = answer(tuned, s.messages, max_new_tokens, cancel)
            done += 1
            report(done, total)
    finally:
        tuned.close()
    result = Comparison(samples, max_new_tokens, source)
    if save:
        result.save(run_dir)
    return result


def run_prompts(run_dir: str | Path, n: int = 4) -> list[str]:
    """Questions to try a run's model on: held out from its training when it held some out."""
    cfg = RunConfig.load(Path(run_dir) / "run.yaml")
    return [s.prompt for s in held_out_prompts(cfg, n)[0]]
