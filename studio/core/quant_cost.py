"""What loading a run in 8 or 4 bits costs in quality: validation perplexity per quantization.

`perplexity_by_quant(run)` loads the run's base model and adapter once per quantization (the
same loader as chat, one model in memory at a time) and measures the mean loss over the
answer tokens of the run's own validation examples: the records training held out, rendered
and masked exactly as training did, so the unquantized figure is the run's final validation
loss. A run with no validation data is measured on its first training records instead, and
`note` says so (those figures flatter the model: it learnt from them).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio.core.errors import DataError, StudioError

QUANTS = ("none", "8bit", "4bit")


class Cancelled(Exception):
    """Raised when `cancel()` says stop; nothing is left loaded."""


@dataclass
class QuantCost:
    quant: str
    """none, 8bit or 4bit."""
    loss: float
    """Mean cross-entropy per answer token (nats)."""
    perplexity: float
    """exp(loss)."""
    tokens: int
    """Answer tokens the loss is averaged over."""
    examples: int
    memory_mb: float
    """The weights' footprint (base + adapter) as transformers counts it."""
    seconds: float
    """Loading and evaluating."""
    dtype: str = ""
    """The weights' floating type (float32 on a CPU, bfloat16 or float16 on most GPUs)."""
    note: str = ""
    """Set when the figures are not from validation data."""

    @property
    def label(self) -> str:
        """16-bit, 32-bit, 8-bit or 4-bit: what the weights are stored in."""
        if self.quant != "none":
            return self.quant.replace("bit", "-bit")
        return "32-bit" if self.dtype == "float32" else "16-bit"


def evaluation_examples(cfg, tokenizer, max_examples: int):
    """(examples, note): the run's validation examples, else its first training records.

    Records, template and masking come from the same functions training uses, so the
    examples are token for token those training evaluated on.
    """
    from studio.core.data.examples import build_examples
    from studio.core.data.split import load_run_split
    from studio.core.data.templates import resolve_template

    split = load_run_split(cfg.data, cfg.train.seed)
    records, note = list(split.val)[:max_examples], ""
    if not records:
        records = list(split.train.records)[:max_examples]
        note = (
            f"this run has no validation data: measured on its first {len(records)} training "
            "records, which it learnt from"
        )
    template = (
        resolve_template(tokenizer, cfg.data.template)
        if any(not r.is_text for r in records)
        else None
    )
    examples, _stats = build_examples(
        records,
        tokenizer,
        template,
        seq_len=cfg.train.seq_len,
        train_on=cfg.data.train_on,
        overlong=cfg.data.overlong,
    )
    if not examples:
        raise DataError(
            f"data.path: none of the {len(records)} records to measure on gives an example with "
            "answer tokens; check the data file and the sequence length",
            field="data.path",
        )
    return examples, note


def perplexity_by_quant(
    adapter: str | Path,
    quants=QUANTS,
    *,
    model: str = "",
    max_examples: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[QuantCost]:
    """One QuantCost per quantization in `quants`, in that order.

    `adapter` is a run folder, its adapter/ or a checkpoint; `model` overrides the run's base.
    `progress(done, total)` is called per example over all quantizations; `cancel()`
    returning True stops at the next example with `Cancelled`.
    """
    from studio.core.config import RunConfig
    from studio.core.infer import find_adapter
    from studio.core.models import load_tokenizer

    if max_examples < 1:
        raise StudioError(
            f"max_examples: must be at least 1; got {max_examples!r}", field="max_examples"
        )
    info = find_adapter(adapter)
    if info.run_dir is None:
        raise StudioError(
            f"adapter: {info.folder} is not in a run folder (no readable run.yaml next to it), "
            "so there is no validation data to measure on",
            field="adapter",
        )
    cfg = RunConfig.load(info.run_dir / "run.yaml")
    base = model or info.base_model
    if not base:
        raise StudioError(
            "model: the run names no base model; pass --model FOLDER_OR_HUB_ID", field="model"
        )
    tokenizer = load_tokenizer(base, trust_remote_code)
    examples, note = evaluation_examples(cfg, tokenizer, max_examples)
    total = len(examples) * len(quants)
    report = progress or (lambda done, total: None)
    stop = cancel or (lambda: False)
    results = []
    for i, quant in enumerate(quants):
        if stop():
            raise Cancelled()
        offset = i * len(examples)
        started = time.perf_counter()
        chat = _load(base, info.folder, quant, device, dtype, trust_remote_code, allow_pickle)
        try:
            loss, tokens = _mean_loss(
                chat.model,
                examples,
                cfg,
                chat.tokenizer,
                lambda done, off=offset: report(off + done, total),
                stop,
            )
            memory = chat.model.get_memory_footprint() / 2**20
            weights = str(chat.model.dtype).removeprefix("torch.")
        finally:
            _free(chat)  # before the next one loads: only one model in memory at a time
        results.append(
            QuantCost(
                quant=quant,
                loss=loss,
                perplexity=math.exp(min(loss, 700.0)),  # exp overflows past ~709
                tokens=tokens,
                examples=len(examples),
                memory_mb=memory,
                seconds=time.perf_counter() - started,
                dtype=weights,
                note=note,
            )
        )
    return results


def _load(base, folder, quant, device, dtype, trust_remote_code, allow_pickle):
    # The chat loader itself, so the figures are those of what the Chat page and
    # `studio chat --quant` load (same dtype choice, same bitsandbytes settings).
    from studio.core.infer import load_chat_model

    return load_chat_model(
        base,
        folder,
        quant=quant,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )


def _mean_loss(net, examples, cfg, tokenizer, progress, stop) -> tuple[float, int]:
    """Token-weighted mean loss over the answer tokens, batched as training evaluated.

    The loop of `studio.core.train.evaluate` with a progress report and a cancel check per
    batch; packing rows, batch size, loss function and autocast are training's own.
    """
    import torch

    from studio.core.data.packing import collate
    from studio.core.objective import LossFn
    from studio.core.train import _autocast_factory, _to, make_rows

    device = next(net.parameters()).device
    autocast, _scaler = _autocast_factory(device.type, net.dtype, cfg)
    rows = make_rows(examples, cfg)
    loss_fn = LossFn(net)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    size = cfg.train.batch_size
    total, count, done = 0.0, 0, 0
    net.eval()
    with torch.no_grad(), autocast(), _quiet_bitsandbytes():
        for at in range(0, len(rows), size):
            if stop():
                raise Cancelled()
            batch = rows[at : at + size]
            loss, n = loss_fn(_to(collate(examples, batch, pad_id), device))
            total += float(loss)
            count += n
            done += sum(len(row) for row in batch)
            progress(done)
    return total / max(1, count), count


@contextlib.contextmanager
def _quiet_bitsandbytes():
    # 8-bit matmuls on float32 inputs (every CPU run) log "inputs will be cast to float16"
    # once per layer per batch: hundreds of identical lines that say nothing about the result.
    log = logging.getLogger("bitsandbytes.autograd._functions")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _free(chat) -> None:
    import torch

    chat.close()
    chat.shared = None
    if gc.isenabled():  # off in the app: it collects on its GUI thread (gui/workers.py)
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(results: list[QuantCost]) -> str:
    """One line: "16-bit ppl 12.34, 940 MB · 8-bit 12.44 (+0.81%), 520 MB · 4-bit ..."."""
    if not results:
        return ""
    first = results[0].perplexity
    parts = []
    for i, r in enumerate(results):
        ppl = f"ppl {r.perplexity:.4g}" if i == 0 else f"{r.perplexity:.4g}"
        change = f" ({relative(r.perplexity, first)})" if i else ""
        parts.append(f"{r.label} {ppl}{change}, {megabytes(r.memory_mb)}")
    return " · ".join(parts)


def relative(value: float, reference: float) -> str:
    """+0.8%: how much higher `value` is than `reference`."""
    if not reference or not math.isfinite(value) or not math.isfinite(reference):
        return "n/a"
    change = (value / reference - 1) * 100
    # Quantization often costs a fraction of a percent: one decimal would show +0.0%.
    return f"{change:+.2f}%" if abs(change) < 1 else f"{change:+.1f}%"


def megabytes(mb: float) -> str:
    # Tiny test and demo models weigh well under a megabyte; real ones hundreds or more.
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2f} MB"
