"""How long a run will take on this machine, said before it starts.

The step count follows from the data and the settings (as `train.make_plan` will count it);
the time of a step is measured: the real model is loaded as training loads it, LoRA applied,
and a few forward/backward/optimizer steps on rows of the planned size are timed. That is
only done when it is cheap (a small model): loading 7B weights just to time them would take
longer than the answer is worth, and the Train page refines the figure live anyway from the
Step events' eta_s. No Qt here; torch is imported inside the functions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from studio.core.config import RunConfig
from studio.core.presets import DataStats, ModelStats, rows_for

START_S = 5.0
"""Starting the training process: Python, then the torch and transformers imports."""

MEASURE_LIMIT = {"cpu": 150_000_000, "cuda": 1_500_000_000, "mps": 500_000_000}
"""The largest model (parameters) whose step is timed ahead, per device."""


@dataclass
class RunEstimate:
    steps: int
    evals: int
    step_s: float | None = None
    """Measured seconds per optimizer step (None: not measured)."""
    load_s: float = 0.0
    """Seconds the measurement took to load the model (training loads it the same way)."""
    eval_s: float = 0.0
    """Seconds for all evaluations together (estimated from the measured step)."""
    device: str = ""

    @property
    def total_s(self) -> float | None:
        if self.step_s is None:
            return None
        return START_S + self.load_s + self.steps * self.step_s + self.eval_s

    def describe(self) -> str:
        steps = f"{self.steps:,} step{'s' if self.steps != 1 else ''}"
        if self.total_s is None:
            return (
                f"{steps}. Not timed ahead: loading a model this size only to time it takes a "
                "while. The Train page shows the time left once the first steps are done."
            )
        where = "this machine's CPU" if self.device == "cpu" else f"this machine's {self.device}"
        return (
            f"About {in_words(self.total_s)} on {where}, loading included: {steps} at "
            f"{self.step_s:.2g} s each (one step of this model timed just now). The Train page "
            "refines this as the run goes."
        )


def in_words(seconds: float) -> str:
    """'about' figures a person reads at a glance: 20 seconds, 3 minutes, 1 hour 20 minutes."""
    s = max(1.0, seconds)
    if s < 50:
        return f"{max(5, round(s / 5) * 5)} seconds"
    if s < 90:
        return "a minute"
    if s < 50 * 60:
        return f"{round(s / 60)} minutes"
    hours, minutes = divmod(round(s / 60 / 10) * 10, 60)
    text = f"{hours} hour{'s' if hours != 1 else ''}"
    return text + (f" {minutes} minutes" if minutes else "")


def planned_steps(cfg: RunConfig, data: DataStats) -> tuple[int, int]:
    """(optimizer steps, evaluations) the run will make, counted as the trainer counts them."""
    t = cfg.train
    held = 0.0 if cfg.data.eval_path else cfg.data.val_split
    rows = rows_for(data, t.seq_len, 1 - held)
    micro = math.ceil(rows / t.batch_size)
    steps = t.max_steps or max(1, math.ceil(math.ceil(t.epochs * micro) / t.grad_accum))
    evaluates = bool(held or cfg.data.eval_path)
    evals = (steps // t.eval_every if t.eval_every else 0) + 1 if evaluates else 0
    return steps, evals


def cheap_to_measure(model: ModelStats, device: str) -> bool:
    return 0 < model.params <= MEASURE_LIMIT.get(device, 0)


def measure_step(cfg: RunConfig, row_len: int, progress=None) -> tuple[float, float, str]:
    """(seconds per optimizer step, seconds to load, device) for cfg's model and settings."""
    import gc

    import torch

    from studio.core.lora import apply_lora
    from studio.core.models import load_model
    from studio.core.objective import LossFn
    from studio.core.optim import build_optim
    from studio.core.train import _autocast_factory

    report = progress or (lambda done, total: None)
    t0 = time.perf_counter()
    loaded = load_model(cfg.model, with_tokenizer=False)
    model = apply_lora(
        loaded.model,
        cfg.lora,
        quantized=cfg.model.quant != "none",
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )
    load_s = time.perf_counter() - t0
    report(1, 4)
    model.train()
    device = loaded.device
    autocast, _scaler = _autocast_factory(device, loaded.dtype, cfg)
    # The run's own optimizer and groups (8-bit state, LoRA+...), as its steps will use them.
    optimizer = build_optim(model, cfg.train, 10, device).optimizer
    vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)
    shape = (cfg.train.batch_size, max(2, row_len))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, shape, generator=gen)
    batch = {
        "input_ids": ids.to(device),
        "labels": ids.clone().to(device),
        "position_ids": torch.arange(shape[1]).expand(shape).contiguous().to(device),
    }
    loss_fn = LossFn(model)
    times = []
    try:
        for i in range(3):  # the first step warms caches and kernels up: not counted
            start = time.perf_counter()
            with autocast():
                loss, n = loss_fn(batch)
            (loss / max(1, n)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            report(2 + min(i, 1), 4)
    finally:
        del model, loaded, optimizer, batch, loss_fn
        if gc.isenabled():  # off in the app: it collects on its GUI thread (gui/workers.py)
            gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    report(4, 4)
    return min(times[1:]) * cfg.train.grad_accum, load_s, device


def estimate_run(cfg: RunConfig, data: DataStats, model: ModelStats, progress=None) -> RunEstimate:
    """Steps and, when cheap to find out, the time the run will take (see the module doc)."""
    from studio.core.models import resolve_device

    steps, evals = planned_steps(cfg, data)
    device = resolve_device(cfg.model.device)
    estimate = RunEstimate(steps, evals, device=device)
    if not cheap_to_measure(model, device):
        return estimate
    # Packed rows come out nearly full, unless the whole dataset is shorter than a row.
    row_len = min(cfg.train.seq_len, max(1, data.tokens))
    step_s, load_s, device = measure_step(cfg, row_len, progress)
    held = 0.0 if cfg.data.eval_path else cfg.data.val_split
    val_batches = math.ceil(rows_for(data, cfg.train.seq_len, held) / cfg.train.batch_size)
    # An evaluation is forward passes only: about a third of a training step's work.
    eval_s = evals * val_batches * step_s / cfg.train.grad_accum / 3 if held else 0.0
    return RunEstimate(steps, evals, step_s, load_s, eval_s, device)
