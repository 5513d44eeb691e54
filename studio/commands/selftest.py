"""`studio --selftest` (or `studio selftest`): check an install end to end in well under a minute.

It loads the bundled demo model, trains a LoRA adapter for a few steps on the demo data in a
temporary folder, chats one answer with that adapter, and removes the folder. Each stage is
printed with its time and result; any failure is one sentence on stderr and exit status 1.
It exports nothing and writes nothing outside the temporary folder.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

STEPS = 12
"""Enough optimizer steps for the demo model's loss to fall visibly (a few seconds on a CPU)."""
QUESTION = "What is the capital of Turkey?"
"""A question from the demo data, so the tuned adapter has seen its answer."""


class SelftestFailed(Exception):
    """One stage failed; the message is the sentence shown to the person."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "selftest",
        help="check the install: train the demo model a few steps and chat once (also --selftest)",
    )
    p.set_defaults(handler=run)


def run(args=None, out=None) -> int:
    from studio.commands.train import quiet_library_noise

    quiet_library_noise()
    out = out or sys.stdout
    start = time.perf_counter()
    print("Studio self-test: demo model, a few training steps, one chat answer.", file=out)
    try:
        with tempfile.TemporaryDirectory(prefix="studio-selftest-") as tmp:
            test = Selftest(Path(tmp))
            try:
                for number, (name, stage) in enumerate(test.stages(), 1):
                    t0 = time.perf_counter()
                    result = _run_stage(name, stage)
                    took = time.perf_counter() - t0
                    print(f"[{number}/3] {name:<6} {took:5.1f} s  {result}", file=out, flush=True)
            finally:
                test.close()
    except SelftestFailed as e:
        print(f"Self-test failed: {e}", file=sys.stderr)
        return 1
    print(f"Self-test passed in {time.perf_counter() - start:.1f} s.", file=out)
    return 0


def _run_stage(name: str, stage) -> str:
    from studio.core.errors import StudioError

    try:
        return stage()
    except SelftestFailed:
        raise
    except StudioError as e:
        raise SelftestFailed(f"{name}: {e.message}") from None
    except Exception as e:  # an install problem shows up as anything: name it, in one line
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SelftestFailed(f"{name}: {type(e).__name__}{': ' + why if why else ''}") from None


class Selftest:
    """The three stages; each returns the line that says what it found."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.base = None  # the demo model as loaded for chat; the tuned adapter joins it
        self.adapter: Path | None = None

    def stages(self):
        return (("load", self.load), ("train", self.train), ("chat", self.chat))

    def load(self) -> str:
        from studio.core import paths

        if not paths.demo_available():
            raise SelftestFailed(
                f"load: the bundled demo is missing (expected data.jsonl and model/ in "
                f"{paths.demo_dir()})"
            )
        import torch

        from studio.core.infer import load_chat_model

        self.base = load_chat_model(str(paths.demo_dir() / "model"))
        params = sum(p.numel() for p in self.base.model.parameters())
        return f"demo model, {params / 1e6:.1f}M parameters, on {self.base.device} (torch {torch.__version__})"

    def train(self) -> str:
        from studio.core import paths
        from studio.core.config import RunConfig
        from studio.core.events import Failed, Step
        from studio.core.train import run_training

        demo = paths.demo_dir()
        cfg = RunConfig()
        cfg.model.path = str(demo / "model")
        cfg.data.path = str(demo / "data.jsonl")
        cfg.lora.r, cfg.lora.lora_alpha, cfg.lora.lora_dropout = 8, 16, 0.0
        t = cfg.train
        t.max_steps, t.batch_size, t.seq_len, t.lr, t.warmup_ratio = STEPS, 2, 128, 3e-3, 0.0
        t.scheduler, t.save_every, t.keep_checkpoints = "constant", STEPS, 1
        cfg.output = str(self.tmp / "run")
        losses: list[float] = []

        def seen(event) -> None:
            if isinstance(event, Step):
                losses.append(event.loss)

        last = run_training(cfg, on_event=seen)
        if isinstance(last, Failed):
            raise SelftestFailed(f"train: {last.message}")
        if last is None or getattr(last, "status", "") != "completed":
            raise SelftestFailed("train: the run ended without finishing")
        if not (Path(last.adapter) / "adapter_config.json").is_file():
            raise SelftestFailed(f"train: no adapter was written to {last.adapter}")
        if len(losses) < 2 or not all(math.isfinite(x) for x in losses):
            raise SelftestFailed(f"train: the loss is not a finite number ({losses})")
        self.adapter = Path(last.adapter)
        return f"{len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    def chat(self) -> str:
        from studio.core.generation import GenerationSettings
        from studio.core.infer import load_chat_model

        model = load_chat_model(adapter=self.adapter, share_with=self.base)
        try:
            settings = GenerationSettings(temperature=0.0, max_new_tokens=40, seed=0)
            with model.lock:
                gen = model.chat([{"role": "user", "content": QUESTION}], settings)
                answer = " ".join("".join(gen).split())
        finally:
            model.close()
        if not gen.completion_tokens:
            raise SelftestFailed("chat: the tuned model gave no answer at all")
        return f"{QUESTION!r} -> {answer or '(only whitespace)'!r} ({gen.completion_tokens} tokens)"

    def close(self) -> None:
        if self.base is not None:
            self.base.close()
            self.base = None
