"""The training loop: our own, small and readable, yielding typed events.

`train(cfg)` is a generator of events (Started, Step, Eval, Checkpoint, Log, Done, Failed).
Bad input raises a StudioError before the first event; a failure during training (NaN loss,
out of memory, any exception) ends the stream with a `Failed` event and leaves the last
checkpoint whole. `run_training` drives it and writes `events.jsonl` in the run folder.

The data order is a pure function of (seed, step), so resuming from a checkpoint only needs
the step: micro-batch g reads rows perm(epoch)[k*batch:(k+1)*batch] with epoch, k = divmod(g,
micro-batches per epoch) and perm seeded by seed + epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from studio.core import checkpoint as ckpt
from studio.core import runs
from studio.core.config import RunConfig
from studio.core.data.examples import IGNORE, Example, build_examples
from studio.core.data.packing import collate, pack_rows, single_rows
from studio.core.errors import ConfigError, DataError, StudioError
from studio.core.events import Checkpoint, Done, Eval, Event, EventLog, Failed, Log, Started, Step
from studio.core.models import context_length


class CancelToken:
    """Cooperative cancellation: checked once per optimizer step."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class Plan:
    rows: list[list[int]]
    micro_per_epoch: int
    total_steps: int


def make_plan(examples: list[Example], cfg: RunConfig) -> Plan:
    t = cfg.train
    rows = make_rows(examples, cfg)
    micro_per_epoch = math.ceil(len(rows) / t.batch_size)
    total_micro = math.ceil(t.epochs * micro_per_epoch)
    total = t.max_steps or max(1, math.ceil(total_micro / t.grad_accum))
    return Plan(rows, micro_per_epoch, total)


def micro_batch_rows(
    plan: Plan, g: int, batch_size: int, seed: int, _cache: dict
) -> list[list[int]]:
    import torch

    epoch, k = divmod(g, plan.micro_per_epoch)
    if epoch not in _cache:
        gen = torch.Generator().manual_seed(seed + epoch)
        _cache.clear()
        _cache[epoch] = torch.randperm(len(plan.rows), generator=gen).tolist()
    order = _cache[epoch]
    return [plan.rows[i] for i in order[k * batch_size : (k + 1) * batch_size]]


SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")
"""Config keys of models that change their logits after the LM head."""


class LossFn:
    """Sum of token losses and the token count for a batch.

    Logits are computed only where a label is, which skips the LM head on prompt tokens
    (the fast path); models with logit post-processing use the full forward instead.
    """

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        conf = base.config
        self.model = model
        self.decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        self.head = base.get_output_embeddings()
        special = any(getattr(conf, k, None) for k in SCALED_LOGITS)
        self.fast = self.decoder is not None and self.head is not None and not special
        self.checked = not self.fast

    def check_fast_path(self, batch) -> None:
        """Use the fast path only if it gives the model's own logits (checked once, on a few
        tokens, without dropout): some models scale or cap their logits after the head
        (Granite divides by logits_scaling, Falcon-H1 multiplies...), which it would skip."""
        import torch

        self.checked = True
        ids = batch["input_ids"][:1, :16]
        pos = batch["position_ids"][:1, :16]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                own = self.model(input_ids=ids, position_ids=pos, use_cache=False).logits.float()
                hidden = self.decoder(input_ids=ids, position_ids=pos, use_cache=False)
                fast = self.head(hidden.last_hidden_state).float()
        finally:
            self.model.train(was_training)
        self.fast = bool((own - fast).abs().max() <= 0.02 * own.abs().max() + 1e-4)

    def __call__(self, batch):
        import torch.nn.functional as F

        if not self.checked:
            self.check_fast_path(batch)
        target = batch["labels"][:, 1:]
        mask = target != IGNORE
        if self.fast:
            hidden = self.decoder(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).last_hidden_state
            logits = self.head(hidden[:, :-1][mask])
        else:
            out = self.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            )
            logits = out.logits[:, :-1][mask]
        loss = F.cross_entropy(logits.float(), target[mask], reduction="sum")
        return loss, int(mask.sum())


def _to(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def make_rows(examples: list[Example], cfg: RunConfig) -> list[list[int]]:
    t = cfg.train
    lengths = [len(e) for e in examples]
    return pack_rows(lengths, t.seq_len, t.seed) if t.packing else single_rows(len(examples))


def evaluate(
    loss_fn: LossFn, examples: list[Example], rows, batch_size: int, pad_id: int, device, autocast
) -> float:
    """Mean loss per labelled token over `examples`, batched as `rows`."""
    import torch

    total, count = 0.0, 0
    was_training = loss_fn.model.training
    loss_fn.model.eval()
    with torch.no_grad(), autocast():
        for i in range(0, len(rows), batch_size):
            loss, n = loss_fn(_to(collate(examples, rows[i : i + batch_size], pad_id), device))
            total += float(loss)
            count += n
    if was_training:
        loss_fn.model.train()
    return total / max(1, count)


def _prepare_data(cfg: RunConfig, tokenizer):
    from studio.core.data.split import load_run_split
    from studio.core.data.templates import resolve_template

    split = load_run_split(cfg.data, cfg.train.seed)
    train_ds, val_records = split.train, split.val
    needs_template = any(not r.is_text for r in train_ds.records + list(val_records))
    template = resolve_template(tokenizer, cfg.data.template) if needs_template else None
    args = dict(seq_len=cfg.train.seq_len, train_on=cfg.data.train_on, overlong=cfg.data.overlong)
    train_ex, stats = build_examples(train_ds.records, tokenizer, template, **args)
    val_ex, val_stats = (
        build_examples(list(val_records), tokenizer, template, **args)
        if val_records
        else ([], None)
    )
    if not train_ex:
        raise DataError(
            f"data.path: no usable training example in {cfg.data.path} ({stats.summary(cfg.train.seq_len)}); "
            "check the format and the sequence length",
            field="data.path",
        )
    return split, train_ex, val_ex, stats, val_stats


def _skipped_logs(split, val_stats, seq_len: int) -> Iterator[Log]:
    """A warning per data file that had records skipped: how many, and the first few lines."""
    from studio.core.data.records import first_problems

    if val_stats is not None and (
        val_stats.dropped or val_stats.no_labels or val_stats.template_errors
    ):
        yield Log(f"validation examples: {val_stats.summary(seq_len)}", level="warning")
    for ds, what in ((split.train, "training"), (split.val_file, "validation")):
        if ds is not None and ds.problems:
            yield Log(
                f"{ds.skipped} record(s) of the {what} file {Path(ds.path).name} skipped: "
                f"{first_problems(ds.problems)}; `studio data inspect {ds.path}` lists them all",
                level="warning",
            )


def _check_seq_len(cfg: RunConfig, model_config: dict) -> None:
    limit = context_length(model_config)
    if limit and cfg.train.seq_len > limit:
        raise ConfigError(
            f"train.seq_len: {cfg.train.seq_len} is beyond this model's limit of {limit} tokens; "
            f"use --seq-len {limit} or less",
            field="train.seq_len",
        )


def _autocast_factory(device: str, dtype, cfg: RunConfig):
    import contextlib

    import torch

    use = cfg.train.mixed_precision == "auto" and device == "cuda"
    if not use:
        return contextlib.nullcontext, None
    amp_dtype = (
        dtype
        if dtype in (torch.bfloat16, torch.float16)
        else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=amp_dtype)), scaler


def train(
    cfg: RunConfig, *, resume: bool = False, cancel: CancelToken | None = None
) -> Iterator[Event]:
    """Train LoRA adapters as configured, yielding events. See the module docstring."""
    import torch

    from studio.core.lora import apply_lora, count_parameters
    from studio.core.models import is_local, load_model, load_tokenizer, read_config

    cancel = cancel or CancelToken()
    t = cfg.train
    run_dir = Path(cfg.output)
    ckpt_dir = run_dir / "checkpoints"
    start_ckpt = ckpt.latest_checkpoint(ckpt_dir) if resume else None
    if resume and start_ckpt is None:
        raise ConfigError(
            f"resume: {ckpt_dir} holds no whole checkpoint to resume from", field="resume"
        )

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    split, train_ex, val_ex, stats, val_stats = _prepare_data(cfg, tokenizer)
    train_ds = split.train
    plan = make_plan(train_ex, cfg)

    if is_local(cfg.model.path):  # fail before the (slow) load when config.json tells already
        _check_seq_len(cfg, read_config(cfg.model.path))
    loaded = load_model(cfg.model, with_tokenizer=False)
    _check_seq_len(cfg, loaded.model.config.to_dict())
    torch.manual_seed(t.seed)
    model = apply_lora(
        loaded.model,
        cfg.lora,
        quantized=cfg.model.quant != "none",
        gradient_checkpointing=t.gradient_checkpointing,
    )
    model.train()
    device = loaded.device
    autocast, scaler = _autocast_factory(device, loaded.dtype, cfg)
    from studio.core.optim import make_optimizer, make_scheduler

    optimizer = make_optimizer(model.parameters(), t.lr, t.weight_decay, device)
    scheduler = make_scheduler(optimizer, plan.total_steps, t.warmup_ratio, t.scheduler)
    start_step = 0
    if start_ckpt is not None:
        state = ckpt.load_training_state(start_ckpt, model, optimizer, scheduler, scaler)
        start_step = int(state["step"])
    else:
        torch.manual_seed(t.seed)  # dropout stream starts the same whatever loading consumed

    trainable, total_params = count_parameters(model)
    yield Started(
        total_steps=plan.total_steps,
        run_dir=str(run_dir),
        start_step=start_step,
        num_examples=len(train_ex),
        num_tokens=sum(len(e) for e in train_ex),
        steps_per_epoch=math.ceil(plan.micro_per_epoch / t.grad_accum),
    )
    yield Log(
        f"{len(train_ds.records)} records kept, {train_ds.skipped} skipped; {stats.summary(t.seq_len)}; "
        f"{len(plan.rows)} rows of up to {t.seq_len} tokens; {len(val_ex)} validation examples"
    )
    yield from _skipped_logs(split, val_stats, t.seq_len)
    yield Log(
        f"trainable parameters: {trainable:,} of {total_params:,}; device {device}, dtype {loaded.dtype}"
    )
    if start_step:
        yield Log(f"resumed from {start_ckpt.name} at step {start_step}")

    loss_fn = LossFn(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = [p for p in model.parameters() if p.requires_grad]
    perm_cache: dict = {}
    val_rows = make_rows(val_ex, cfg)  # packed once, evaluated many times
    started = time.perf_counter()
    step = start_step
    last_loss = last_eval = None

    every = t.save_every or auto_save_every(plan.total_steps)
    last_save = time.perf_counter()

    def checkpoint_due(at_step: int, now: float) -> bool:
        if at_step % every == 0:
            return True
        # Automatic saving also bounds the time at risk on long runs.
        return not t.save_every and now - last_save >= AUTO_SAVE_SECONDS

    def save(at_step: int):
        state = {
            "epoch": at_step * t.grad_accum / plan.micro_per_epoch,
            "total_steps": plan.total_steps,
        }
        path = ckpt.save_checkpoint(ckpt_dir, at_step, model, optimizer, scheduler, state, scaler)
        ckpt.prune_checkpoints(ckpt_dir, t.keep_checkpoints)
        return Checkpoint(step=at_step, path=str(path))

    try:
        while step < plan.total_steps:
            if cancel.cancelled:
                yield save(step)
                adapter = _save_adapter(model, tokenizer, run_dir)
                yield Done(
                    step=step,
                    adapter=str(adapter),
                    status="stopped",
                    final_loss=last_loss,
                    eval_loss=last_eval,
                )
                return
            t0 = time.perf_counter()
            micro = [
                _to(
                    collate(
                        train_ex,
                        micro_batch_rows(plan, g, t.batch_size, t.seed, perm_cache),
                        pad_id,
                    ),
                    device,
                )
                for g in range(step * t.grad_accum, (step + 1) * t.grad_accum)
            ]
            n_target = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
            loss_sum = 0.0
            for batch in micro:
                with autocast():
                    loss, _ = loss_fn(batch)
                scaled = loss / max(1, n_target)
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += float(loss.detach())
            loss_value = loss_sum / max(1, n_target)
            if not math.isfinite(loss_value):
                yield Failed(
                    message=f"the loss became {loss_value} at step {step + 1}; the run stopped. "
                    "Try a lower learning rate, or float32/bfloat16 instead of float16. "
                    "The last checkpoint is kept and can be resumed.",
                    step=step + 1,
                    kind="nan",
                )
                return
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = _clip(params, t.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            last_loss = loss_value
            now = time.perf_counter()
            elapsed = now - started
            tokens = sum(int((b["input_ids"] != pad_id).sum()) for b in micro)
            yield Step(
                step=step,
                epoch=round(step * t.grad_accum / plan.micro_per_epoch, 4),
                loss=loss_value,
                lr=lr,
                grad_norm=grad_norm,
                tokens_per_s=tokens / max(1e-9, now - t0),
                elapsed_s=elapsed,
                eta_s=elapsed / (step - start_step) * (plan.total_steps - step),
            )
            is_last = step == plan.total_steps
            if val_ex and ((t.eval_every and step % t.eval_every == 0) or is_last):
                last_eval = evaluate(
                    loss_fn, val_ex, val_rows, t.batch_size, pad_id, device, autocast
                )
                yield Eval(step=step, eval_loss=last_eval)
                if not math.isfinite(last_eval):
                    yield Log(
                        f"the validation loss is {last_eval} at step {step} although training "
                        "goes on normally: evaluation overflows (float16?). Try bfloat16 or "
                        "float32 (--dtype).",
                        level="warning",
                    )
            if is_last or checkpoint_due(step, now):
                yield save(step)
                last_save = time.perf_counter()
        adapter = _save_adapter(model, tokenizer, run_dir)
        yield Done(step=step, adapter=str(adapter), final_loss=last_loss, eval_loss=last_eval)
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):  # torch < 2.5
        yield Failed(
            message=f"out of memory at step {step + 1}. Try a smaller batch size, a shorter sequence "
            "length, gradient checkpointing, or QLoRA (4-bit). The last checkpoint is kept.",
            step=step + 1,
            kind="oom",
        )
    except Exception as e:  # the run fails; the caller (and the app) keep going
        yield Log(traceback.format_exc(), level="error")
        yield Failed(
            message=f"training failed at step {step + 1}: {type(e).__name__}: {e}", step=step + 1
        )


AUTO_SAVE_CHECKPOINTS = 10
AUTO_SAVE_SECONDS = 30 * 60


def auto_save_every(total_steps: int) -> int:
    """With save_every 0: the step interval for about ten checkpoints over the run."""
    return max(1, math.ceil(total_steps / AUTO_SAVE_CHECKPOINTS))


def _clip(params, max_norm: float) -> float:
    import torch

    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _save_adapter(model, tokenizer, run_dir: Path) -> Path:
    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return ckpt.atomic_folder(run_dir / "adapter", write)


def run_training(
    cfg: RunConfig,
    *,
    resume: bool = False,
    cancel: CancelToken | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> Event:
    """Train, writing run.yaml and events.jsonl; returns the last event (Done or Failed)."""
    run_dir = Path(cfg.output)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume or not (run_dir / "run.yaml").exists():
        cfg.save(run_dir / "run.yaml")
    # Who is training this folder, so the app can follow, stop or re-attach to a CLI run. The
    # app writes the same record when it starts the run; the child keeps it then.
    if runs.read_process(run_dir).get("pid") != os.getpid():
        runs.write_process(run_dir, os.getpid(), [sys.executable, *sys.argv])
    log = EventLog(run_dir / "events.jsonl")
    last: Event | None = None
    try:
        for event in train(cfg, resume=resume, cancel=cancel):
            log.write(event)
            if on_event:
                on_event(event)
            last = event
    except StudioError as e:
        # Bad input: recorded for whoever watches the run folder, then raised (CLI exit 2).
        failed = Failed(message=e.message, kind="input")
        log.write(failed)
        if on_event:
            on_event(failed)
        log.close()
        if created and last is None:
            # A folder made just now for a run that never started (a mistyped --model, say)
            # would only clutter the run history.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        log.close()
    return last
