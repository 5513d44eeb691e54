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

import contextlib
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
from studio.core.config import PAIR_MODES, RunConfig
from studio.core.data.examples import IGNORE, Example, build_examples
from studio.core.data.packing import collate, pack_rows, single_rows
from studio.core.distributed import World, init_world
from studio.core.errors import ConfigError, DataError, StudioError
from studio.core.events import Checkpoint, Done, Eval, Event, EventLog, Failed, Log, Started, Step
from studio.core.models import context_length
from studio.core.sinks import Sink, open_sinks


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


def make_plan(examples: list[Example], cfg: RunConfig, world_size: int = 1) -> Plan:
    """Micro-batches of batch_size rows a process (world_size processes share each one)."""
    t = cfg.train
    rows = make_rows(examples, cfg)
    micro_per_epoch = math.ceil(len(rows) / (t.batch_size * world_size))
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


def _to(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def make_rows(examples: list[Example], cfg: RunConfig) -> list[list[int]]:
    t = cfg.train
    lengths = [len(e) for e in examples]
    if t.mode in PAIR_MODES:  # both sides of a pair in one row (studio.core.data.pairs)
        from studio.core.data.pairs import pair_rows

        return pair_rows(lengths, t.seq_len, t.seed, t.packing)
    return pack_rows(lengths, t.seq_len, t.seed) if t.packing else single_rows(len(examples))


def evaluate_sums(
    loss_fn, examples: list[Example], rows, batch_size: int, pad_id: int, device, autocast
) -> tuple[float, int]:
    """(sum of token losses, labelled tokens) over `examples`, batched as `rows`."""
    import torch

    total, count = 0.0, 0
    was_training = loss_fn.model.training
    loss_fn.model.eval()
    make_batch = getattr(loss_fn, "collate", None) or (lambda *a: collate(*a))
    with torch.no_grad(), autocast():
        for i in range(0, len(rows), batch_size):
            loss, n = loss_fn(_to(make_batch(examples, rows[i : i + batch_size], pad_id), device))
            total += float(loss)
            count += n
    if was_training:
        loss_fn.model.train()
    return total, count


def evaluate(loss_fn, examples, rows, batch_size: int, pad_id: int, device, autocast) -> float:
    """Mean loss per labelled token over `examples`, batched as `rows`."""
    total, count = evaluate_sums(loss_fn, examples, rows, batch_size, pad_id, device, autocast)
    return total / max(1, count)


def _prepare_data(cfg: RunConfig, tokenizer):
    from studio.core.data.pairs import check_mode
    from studio.core.data.split import load_run_split
    from studio.core.data.templates import resolve_template

    split = load_run_split(cfg.data, cfg.train.seed)
    check_mode(cfg.train.mode, split)
    train_ds, val_records = split.train, split.val
    needs_template = any(not r.is_text for r in train_ds.records + list(val_records))
    template = resolve_template(tokenizer, cfg.data.template) if needs_template else None
    args = dict(seq_len=cfg.train.seq_len, train_on=cfg.data.train_on, overlong=cfg.data.overlong)
    build = build_examples
    if cfg.train.mode in PAIR_MODES:  # pairs of examples, labels on the answers only
        from studio.core.data.pairs import build_pair_examples

        build = build_pair_examples
        args.pop("train_on")
    train_ex, stats = build(train_ds.records, tokenizer, template, **args)
    val_ex, val_stats = (
        build(list(val_records), tokenizer, template, **args) if val_records else ([], None)
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
    """Train LoRA adapters as configured, yielding events. See the module docstring.

    Under torchrun every rank runs this; each yields the same events, and only rank 0's
    are written (run_training)."""
    world = init_world(cfg.model.device)
    try:
        yield from _train(cfg, resume, cancel or CancelToken(), world)
        world.leave_together()  # not on an error: a failed rank is ended by torchrun
    finally:
        world.close()


def _resume_point(cfg: RunConfig, resume: bool, world: World):
    ckpt_dir = Path(cfg.output) / "checkpoints"
    start = ckpt.latest_checkpoint(ckpt_dir) if resume else None
    if resume and start is None:
        raise ConfigError(
            f"resume: {ckpt_dir} holds no whole checkpoint to resume from", field="resume"
        )
    if start is not None:
        saved = int(ckpt.read_state(start).get("world_size", 1))
        if saved != world.size:
            raise ConfigError(
                f"resume: {start.name} was written by {saved} training process(es), and this "
                f"run has {world.size}; the data order and the optimizer state depend on it. "
                f"Resume with --nproc {saved}.",
                field="resume",
            )
    return start


def _setup_downloads(cfg: RunConfig, cancel: CancelToken) -> Iterator[Event]:
    """Hub ids not whole in the cache are downloaded first, as Log and Progress events
    (stage "download ...", bytes); stopping the run stops the download (DownloadCancelled)."""
    from studio.core.hub import download_events

    paths = [cfg.model.path] + ([cfg.distill.teacher] if cfg.train.mode == "distill" else [])
    for path in paths:
        yield from download_events(
            path,
            allow_pickle=cfg.model.allow_pickle,
            trust_remote_code=cfg.model.trust_remote_code,
            cancel=cancel,
        )


def _setup_model(cfg: RunConfig):
    import torch

    from studio.core.lora import apply_lora
    from studio.core.models import is_local, load_model, read_config

    if is_local(cfg.model.path):  # fail before the (slow) load when config.json tells already
        _check_seq_len(cfg, read_config(cfg.model.path))
    loaded = load_model(cfg.model, with_tokenizer=False)
    _check_seq_len(cfg, loaded.model.config.to_dict())
    torch.manual_seed(cfg.train.seed)  # the same LoRA init on every rank
    model = apply_lora(
        loaded.model,
        cfg.lora,
        quantized=cfg.model.quant != "none",
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )
    model.train()
    return model, loaded


def _setup_teacher(cfg: RunConfig, tokenizer, world: World):
    """Distillation's teacher (studio.core.distill.Teacher), else None. Its tokenizer is
    checked against the student's here, before any data or weights load."""
    if cfg.train.mode != "distill":
        return None
    from studio.core.distill import prepare

    return prepare(cfg, tokenizer, world)


def _setup_objective(cfg: RunConfig, model, loaded, teacher=None):
    """The objective of cfg.train.mode (see studio.core.objective.Objective)."""
    if cfg.train.mode == "distill":
        from studio.core.distill import make_objective

        return make_objective(teacher, model)
    if cfg.train.mode in PAIR_MODES:
        from studio.core.preference import make_objective

        return make_objective(cfg, model)
    from studio.core.objective import LossFn

    return LossFn(model)


def _restore(start_ckpt, model, optim, scaler, world: World, seed: int) -> int:
    import torch

    if start_ckpt is None:
        # The dropout stream starts the same whatever loading consumed (one per rank).
        torch.manual_seed(seed + world.rank)
        return 0
    from studio.core.lora import check_adapter_fits

    # A checkpoint from another LoRA layout is refused before its weights go in.
    check_adapter_fits(model, start_ckpt, resume=True)
    optim.load_state_dict(ckpt.read_extra(start_ckpt))
    state = ckpt.load_training_state(
        start_ckpt, model, optim.optimizer, optim.scheduler, scaler, rank=world.rank
    )
    return int(state["step"])


def _train(cfg: RunConfig, resume: bool, cancel: CancelToken, world: World) -> Iterator[Event]:
    from studio.core.lora import count_parameters
    from studio.core.models import load_tokenizer
    from studio.core.optim import build_optim

    t = cfg.train
    start_ckpt = _resume_point(cfg, resume, world)
    yield from _setup_downloads(cfg, cancel)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    teacher = _setup_teacher(cfg, tokenizer, world)
    if teacher is not None:  # with distill.generate: the data with the teacher's answers
        cfg = teacher.cfg
    split, train_ex, val_ex, stats, val_stats = _prepare_data(cfg, tokenizer)
    plan = make_plan(train_ex, cfg, world.size)
    model, loaded = _setup_model(cfg)
    device = loaded.device
    autocast, scaler = _autocast_factory(device, loaded.dtype, cfg)
    optim = build_optim(model, t, plan.total_steps, device)
    loss_fn = _setup_objective(cfg, model, loaded, teacher)
    start_step = _restore(start_ckpt, model, optim, scaler, world, t.seed)
    forward, comm = world.wrap(loss_fn, t.grad_compression)

    trainable, total_params = count_parameters(model)
    yield Started(
        total_steps=plan.total_steps,
        run_dir=str(cfg.output),
        start_step=start_step,
        num_examples=len(train_ex),
        num_tokens=sum(len(e) for e in train_ex),
        steps_per_epoch=math.ceil(plan.micro_per_epoch / t.grad_accum),
    )
    yield Log(
        f"{len(split.train.records)} records kept, {split.train.skipped} skipped; "
        f"{stats.summary(t.seq_len)}; {len(plan.rows)} rows of up to "
        f"{t.seq_len * (2 if t.mode in PAIR_MODES else 1)} tokens; "
        f"{len(val_ex)} validation examples"
    )
    yield from _skipped_logs(split, val_stats, t.seq_len)
    yield Log(
        f"trainable parameters: {trainable:,} of {total_params:,}; device {device}, dtype {loaded.dtype}"
    )
    if world.size > 1:
        yield Log(
            f"{world.size} training processes ({world.backend}); each step takes "
            f"{t.batch_size} rows a process, {t.batch_size * world.size * t.grad_accum} in all; "
            f"gradients sent as {'fp32' if t.grad_compression == 'none' else t.grad_compression}"
        )
    for line in optim.start_messages(t.optimizer):
        yield Log(line)
    yield from (Log(line) for line in getattr(loss_fn, "notes", ()))
    if start_step:
        yield Log(f"resumed from {start_ckpt.name} at step {start_step}")
    loop = Loop(cfg, world, plan, train_ex, val_ex, model, tokenizer, loss_fn, forward, comm,
                optim, autocast, scaler, device, cancel)  # fmt: skip
    yield from loop.run(start_step)


class Loop:
    """One readable training loop over optimizer steps (see `run`)."""

    def __init__(self, cfg, world, plan, train_ex, val_ex, model, tokenizer, loss_fn, forward,
                 comm, optim, autocast, scaler, device, cancel):  # fmt: skip
        self.cfg, self.t, self.world, self.plan = cfg, cfg.train, world, plan
        self.train_ex, self.val_ex = train_ex, val_ex
        self.model, self.tokenizer, self.loss_fn, self.forward = model, tokenizer, loss_fn, forward
        self.comm, self.optim, self.autocast, self.scaler = comm, optim, autocast, scaler
        self.device, self.cancel = device, cancel
        self.run_dir = Path(cfg.output)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.perm_cache: dict = {}
        self.val_rows = make_rows(val_ex, cfg)  # packed once, evaluated many times
        self.every = self.t.save_every or auto_save_every(plan.total_steps)
        self.last_loss = self.last_eval = None
        self.extra: dict[str, float] = {}
        """The objective's own figures for the last step (per unit), for the Step event."""

    def micro_batches(self, step: int) -> list[dict]:
        """This rank's share of the step's micro-batches, on the device."""
        t, world = self.t, self.world
        out = []
        for g in range(step * t.grad_accum, (step + 1) * t.grad_accum):
            rows = micro_batch_rows(
                self.plan, g, t.batch_size * world.size, t.seed, self.perm_cache
            )
            mine = world.share(rows)
            batch = self.loss_fn.collate(self.train_ex, mine or rows[:1], self.pad_id)
            if not mine:  # fewer rows than ranks at the end of an epoch: a no-op batch
                batch["labels"].fill_(IGNORE)
                batch["input_ids"].fill_(self.pad_id)
            out.append(_to(batch, self.device))
        return out

    def run(self, start_step: int) -> Iterator[Event]:
        import torch

        step = start_step
        started = time.perf_counter()
        last_save = started
        try:
            while step < self.plan.total_steps:
                t0 = time.perf_counter()
                micro = self.micro_batches(step)
                local_target = sum(self.loss_fn.units(b) for b in micro)
                local_tokens = sum(int((b["input_ids"] != self.pad_id).sum()) for b in micro)
                n_target, stop, tokens = self.world.sum(
                    [local_target, float(self.cancel.cancelled), local_tokens]
                )
                if stop:  # every rank stops at the same step
                    yield self.save(step)
                    yield self.finish(step, "stopped")
                    return
                loss_value, logs = self.step(step, micro, n_target)
                if not math.isfinite(loss_value):
                    yield Failed(
                        message=f"the loss became {loss_value} at step {step + 1}; the run stopped. "
                        "Try a lower learning rate, or float32/bfloat16 instead of float16. "
                        "The last checkpoint is kept and can be resumed.",
                        step=step + 1,
                        kind="nan",
                    )
                    return
                yield from (Log(m) for m in logs)
                step += 1
                now = time.perf_counter()
                yield self.step_event(step, loss_value, tokens / max(1e-9, now - t0),
                                      now - started, start_step)  # fmt: skip
                is_last = step == self.plan.total_steps
                if self.val_ex and (
                    (self.t.eval_every and step % self.t.eval_every == 0) or is_last
                ):
                    yield from self.evaluate(step)
                if is_last or self.checkpoint_due(step, now - last_save):
                    yield self.save(step)
                    last_save = time.perf_counter()
            yield self.finish(step, "completed")
        except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):  # torch < 2.5
            yield Failed(
                message=f"out of memory at step {step + 1}. Try a smaller batch size, a shorter sequence "
                "length, gradient checkpointing, QLoRA (4-bit) or the 8-bit optimizer. The last "
                "checkpoint is kept.",
                step=step + 1,
                kind="oom",
            )
        except Exception as e:  # the run fails; the caller (and the app) keep going
            yield Log(traceback.format_exc(), level="error")
            yield Failed(
                message=f"training failed at step {step + 1}: {type(e).__name__}: {e}",
                step=step + 1,
            )

    def step(self, step: int, micro: list[dict], n_target: float) -> tuple[float, list[str]]:
        """Forward and backward over the micro-batches, then one optimizer update."""
        from studio.core.distributed import no_sync

        scaler, optimizer = self.scaler, self.optim.optimizer
        if self.comm is not None:
            self.comm.step = step
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            with contextlib.nullcontext() if last else no_sync(self.forward):
                with self.autocast():
                    loss, _ = self.forward(batch)
                # DDP averages gradients over the ranks: scale up so the update is the
                # gradient of the global sum over all labelled tokens / their count.
                scaled = loss / max(1, n_target) * self.world.size
                (scaler.scale(scaled) if scaler else scaled).backward()
            loss_sum += float(loss.detach())
        extra = self.loss_fn.take_metrics()
        loss_sum, *sums = self.world.sum([loss_sum, *extra.values()])
        self.extra = {k: v / max(1, n_target) for k, v in zip(extra, sums, strict=True)}
        loss_value = loss_sum / max(1, n_target)
        if not math.isfinite(loss_value):
            return loss_value, []
        if scaler:
            scaler.unscale_(optimizer)
        logs = self.optim.after_backward(step)
        self.grad_norm = _clip(self.params, self.t.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.lr = self.optim.scheduler.get_last_lr()[0]
        self.optim.scheduler.step()
        return loss_value, logs

    def step_event(self, step, loss_value, tokens_per_s, elapsed, start_step) -> Step:
        self.last_loss = loss_value
        metrics = dict(self.extra)
        if self.comm is not None:
            sent, raw = self.comm.take_bytes()
            metrics.update(comm_bytes=sent, comm_bytes_fp32=raw)
        return Step(
            step=step,
            epoch=round(step * self.t.grad_accum / self.plan.micro_per_epoch, 4),
            loss=loss_value,
            lr=self.lr,
            grad_norm=self.grad_norm,
            tokens_per_s=tokens_per_s,
            elapsed_s=elapsed,
            eta_s=elapsed / (step - start_step) * (self.plan.total_steps - step),
            metrics=metrics,
        )

    def evaluate(self, step: int) -> Iterator[Event]:
        mine = self.val_rows[self.world.rank :: self.world.size]
        self.loss_fn.take_metrics()  # start the evaluation's own sums from zero
        total, count = evaluate_sums(self.loss_fn, self.val_ex, mine, self.t.batch_size,
                                     self.pad_id, self.device, self.autocast)  # fmt: skip
        extra = self.loss_fn.take_metrics()
        total, count, *sums = self.world.sum([total, count, *extra.values()])
        self.last_eval = total / max(1, count)
        metrics = {k: v / max(1, count) for k, v in zip(extra, sums, strict=True)}
        yield Eval(step=step, eval_loss=self.last_eval, metrics=metrics)
        if not math.isfinite(self.last_eval):
            yield Log(
                f"the validation loss is {self.last_eval} at step {step} although training "
                "goes on normally: evaluation overflows (float16?). Try bfloat16 or "
                "float32 (--dtype).",
                level="warning",
            )

    def checkpoint_due(self, at_step: int, since_save: float) -> bool:
        if at_step % self.every == 0:
            return True
        # Automatic saving also bounds the time at risk on long runs.
        return not self.t.save_every and since_save >= AUTO_SAVE_SECONDS

    def save(self, at_step: int) -> Checkpoint:
        """A checkpoint (rank 0 writes it; every rank hands over its RNG state)."""
        import torch

        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        rngs = self.world.gather(rng)
        path = self.ckpt_dir / ckpt.checkpoint_name(at_step)
        if self.world.main:
            state = {
                "epoch": at_step * self.t.grad_accum / self.plan.micro_per_epoch,
                "total_steps": self.plan.total_steps,
                "world_size": self.world.size,
            }
            path = ckpt.save_checkpoint(
                self.ckpt_dir, at_step, self.model, self.optim.optimizer, self.optim.scheduler,
                state, self.scaler, rngs=rngs, extra=self.optim.state_dict(),
            )  # fmt: skip
            ckpt.prune_checkpoints(self.ckpt_dir, self.t.keep_checkpoints)
        return Checkpoint(step=at_step, path=str(path))

    def finish(self, step: int, status: str) -> Done:
        adapter = self.run_dir / "adapter"
        if self.world.main:
            adapter = _save_adapter(self.model, self.tokenizer, self.run_dir)
        return Done(step=step, adapter=str(adapter), status=status,
                    final_loss=self.last_loss, eval_loss=self.last_eval)  # fmt: skip


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
    """Train, writing run.yaml and events.jsonl; returns the last event (Done or Failed).

    Under torchrun only rank 0 writes; the other ranks train and return their last event."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        last: Event | None = None
        for event in train(cfg, resume=resume, cancel=cancel):
            last = event
        return last
    run_dir = Path(cfg.output)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume or not (run_dir / "run.yaml").exists():
        cfg.save(run_dir / "run.yaml")
    # Who is training this folder, so the app can follow, stop or re-attach to a CLI run. The
    # app (or the torchrun launcher) writes the same record when it starts the run; the
    # child keeps it then.
    launched = bool(os.environ.get("STUDIO_LAUNCHER_PID"))
    if runs.read_process(run_dir).get("pid") != os.getpid() and not launched:
        runs.write_process(run_dir, os.getpid(), [sys.executable, *sys.argv])
    log = EventLog(run_dir / "events.jsonl")
    sinks: list[Sink] = [log]
    last: Event | None = None
    downloading_only = True  # no event yet but a download's
    try:
        # Inside the try: a sink whose package is missing is bad input like a mistyped --model.
        sinks += open_sinks(cfg, run_dir)
        for event in train(cfg, resume=resume, cancel=cancel):
            for sink in sinks:
                sink.write(event)
            if on_event:
                on_event(event)
            last = event
            downloading_only = downloading_only and (
                event.type == "progress"
                or (event.type == "log" and event.message.startswith("download"))
            )
    except StudioError as e:
        # Bad input: recorded for whoever watches the run folder, then raised (CLI exit 2).
        failed = Failed(message=e.message, kind="input")
        log.write(failed)
        if on_event:
            on_event(failed)
        log.close()
        if created and (last is None or downloading_only):
            # A folder made just now for a run that never started (a mistyped --model, say)
            # would only clutter the run history.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        for sink in sinks:
            sink.close()
    return last
