"""`studio train`: fine-tune with LoRA/QLoRA from the terminal.

Flags override `--config run.yaml`, which overrides the defaults. Exit codes: 0 done,
1 training failed (an `error` event is written), 2 bad input, 130 cancelled (after saving).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path


def demo_settings() -> dict:
    """What --demo sets unless a flag or --config says otherwise: the app's default preset as
    sized for the bundled demo (studio.core.presets, the code the wizard uses too)."""
    from studio.core.presets import demo_settings as planned

    return planned()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model with LoRA/QLoRA",
        description="Fine-tune a model with LoRA or QLoRA. Flags override --config.",
    )
    p.add_argument("--config", help="a run.yaml to start from (flags override it)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output from its last checkpoint",
    )
    p.add_argument(
        "--demo", action="store_true", help="train the bundled demo model on the bundled data"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="after training, answer N held-out prompts with the base and the tuned model and "
        "say how many ended their turn (default: 3 with --demo unless --quiet, else 0); "
        "saved to RUN/samples.json",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="train on N GPUs of this machine: N processes through torchrun, one a GPU "
        "(--nproc N does the same on any device, CPU processes too)",
    )
    from studio.core.config import CHOICES, FLAGS, RunConfig

    defaults = RunConfig().to_dict()
    for key, flag in FLAGS.items():
        section, _, name = key.partition(".")
        kind = type(defaults[section][name] if name else defaults[section])
        kw = {"dest": key, "default": None}
        if kind is bool:  # --x / --no-x
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            p.add_argument(flag, type=kind, choices=CHOICES.get(key), **kw)
    p.set_defaults(handler=run)


def _set(cfg, key: str, value):
    return _set_all(cfg, {key: value})


def _set_all(cfg, values: dict):
    from studio.core.config import RunConfig

    if not values:
        return cfg
    d = cfg.to_dict()
    for key, value in values.items():
        section, _, name = key.partition(".")
        if name:
            d[section][name] = value
        else:
            d[section] = value
    return RunConfig.from_dict(d)


def build_config(args):
    """The resolved RunConfig from defaults, --demo, --config / the run's run.yaml, then flags."""
    from studio.core.config import RunConfig
    from studio.core.errors import ConfigError
    from studio.core.paths import demo_dir

    output = args.output
    saved = None
    if args.resume and output and (Path(output) / "run.yaml").is_file():
        saved = RunConfig.load(Path(output) / "run.yaml")
    if args.config:
        cfg = RunConfig.load(args.config)
    elif saved is not None:
        cfg = saved
    else:
        cfg = RunConfig()
    if args.demo:
        demo = demo_dir()
        if not (demo / "model" / "config.json").is_file():
            raise ConfigError(f"demo: the bundled demo is missing from {demo}", field="demo")
        if not cfg.model.path:
            cfg = _set(cfg, "model.path", str(demo / "model"))
        if not cfg.data.path:
            cfg = _set(cfg, "data.path", str(demo / "data.jsonl"))
        if not args.config and saved is None:  # a resumed run keeps its own settings
            for key, value in demo_settings().items():
                cfg = _set(cfg, key, value)
    from studio.core.config import FLAGS

    # All flags at once: settings checked together (--mode distill needs --teacher) must
    # not be judged half-set.
    cfg = _set_all(
        cfg, {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None}
    )
    if getattr(args, "gpus", None) is not None:
        from studio.core.launch import check_gpus, gpu_count

        if args.gpus < 1:
            raise ConfigError(
                f"--gpus: must be 1 or more; got {args.gpus}", field="train.processes"
            )
        check_gpus(args.gpus, gpu_count())
        cfg = _set(cfg, "train.processes", args.gpus)
        cfg = _set(cfg, "model.device", "cuda")
    if cfg.train.processes > 1 and cfg.model.device in ("auto", "cuda"):
        from studio.core.launch import check_gpus, gpu_count

        have = gpu_count()
        if have or cfg.model.device == "cuda":  # one process a GPU (auto without GPUs: CPU ranks)
            check_gpus(cfg.train.processes, have, "--nproc")
    if not cfg.output:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg = _set(cfg, "output", str(Path("runs") / f"{'demo' if args.demo else 'run'}-{stamp}"))
    if not cfg.model.path:
        raise ConfigError(
            "model.path: no model given; pass --model FOLDER_OR_HUB_ID (or --demo)",
            field="model.path",
        )
    if not cfg.data.path:
        raise ConfigError(
            "data.path: no training data given; pass --data FILE (or --demo)", field="data.path"
        )
    cfg = _absolute(cfg)
    if saved is not None:
        _check_resumable(_absolute(saved), cfg)
    return cfg


# What may change when a run is resumed: how often it evaluates and saves, and where it runs.
# Anything else changes the step plan, the data or the model, so the rest would not continue
# the same run (and its run.yaml would no longer describe it).
RESUME_MAY_CHANGE = {
    "train.eval_every",
    "train.save_every",
    "train.keep_checkpoints",
    "train.gradient_checkpointing",
    "train.mixed_precision",
    "model.device",
    "model.allow_pickle",
}


def _check_resumable(saved, cfg) -> None:
    from studio.core.config import flat_settings
    from studio.core.errors import ConfigError

    before, after = flat_settings(saved), flat_settings(cfg)
    changed = [
        k
        for k in after
        if k not in RESUME_MAY_CHANGE and k != "output" and before.get(k) != after[k]
    ]
    if changed:
        shown = "; ".join(f"{k} is {before.get(k)!r}, not {after[k]!r}" for k in changed[:4])
        raise ConfigError(
            f"resume: in the run's run.yaml {shown}. With other settings this would not "
            "continue the same run: drop those flags to resume it as it was, or start a new run.",
            field="resume",
        )


def _absolute(cfg):
    """run.yaml must re-run as-is from any folder: make local paths absolute."""
    from studio.core.models import is_local

    model = cfg.model
    if is_local(model.path):
        model = dataclasses.replace(model, path=str(Path(model.path).expanduser().resolve()))
    data = dataclasses.replace(
        cfg.data,
        path=str(Path(cfg.data.path).expanduser().resolve()),
        eval_path=str(Path(cfg.data.eval_path).expanduser().resolve())
        if cfg.data.eval_path
        else "",
    )
    return dataclasses.replace(
        cfg, model=model, data=data, output=str(Path(cfg.output).expanduser().resolve())
    )


class Progress:
    """A one-line progress bar with loss and ETA on a terminal; plain lines otherwise."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream, self.quiet = stream or sys.stderr, quiet
        self.tty = self.stream.isatty()
        self.total = 0
        self.last_plain = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        kind = event.type
        if kind == "start":
            self.total = event.total_steps
            self._line(
                f"training: {event.total_steps} steps, {event.num_examples} examples, run folder {event.run_dir}"
            )
        elif kind == "log" and event.level != "error":
            self._line(("warning: " if event.level == "warning" else "") + event.message)
        elif kind == "step":
            width = 30
            filled = int(width * event.step / max(1, self.total))
            bar = "#" * filled + "-" * (width - filled)
            text = (
                f"[{bar}] {event.step}/{self.total} loss {event.loss:.4f} lr {event.lr:.2e} "
                f"{event.tokens_per_s:,.0f} tok/s ETA {_hms(event.eta_s)}"
            ) + _rewards(event.metrics)
            if self.tty:
                self.stream.write("\r" + text)
                self.stream.flush()
            elif time.monotonic() - self.last_plain > 2 or event.step == self.total:
                self.last_plain = time.monotonic()
                self._line(text)
        elif kind == "progress":  # a hub model being downloaded before training
            from studio.core.hub import bytes_text

            text = f"{event.stage}, {bytes_text(event.done, event.total)}"
            if self.tty:
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
            elif time.monotonic() - self.last_plain > 2 or event.done >= event.total:
                self.last_plain = time.monotonic()
                self._line(text)
        elif kind == "eval":
            self._line(
                f"step {event.step}: eval loss {event.eval_loss:.4f}{_rewards(event.metrics)}"
            )
        elif kind == "checkpoint":
            self._line(f"checkpoint: {event.path}")
        elif kind == "done":
            self._line(
                f"{'stopped' if event.status == 'stopped' else 'done'} at step {event.step}; adapter: {event.adapter}"
            )
        elif kind == "error":
            self._line(f"error: {event.message}")

    def _line(self, text: str) -> None:
        if self.tty:
            text = "\r\033[K" + text
        self.stream.write(text + "\n")
        self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print_estimate(cfg) -> None:
    try:
        from studio.core.model_info import estimate_memory, read_model_info

        info = read_model_info(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        total = None
        import torch

        if torch.cuda.is_available() and cfg.model.device in ("auto", "cuda"):
            total = torch.cuda.get_device_properties(0).total_memory
        teacher = None
        if cfg.train.mode == "distill":
            teacher = read_model_info(
                cfg.distill.teacher, trust_remote_code=cfg.model.trust_remote_code
            )
        print(estimate_memory(info, cfg, total, teacher=teacher).summary(), file=sys.stderr)
    except Exception as e:  # an estimate is advice; never block training on it
        print(
            f"(no memory estimate: {str(e).splitlines()[0] if str(e) else type(e).__name__})",
            file=sys.stderr,
        )


def quiet_library_noise() -> None:
    """Hide library chatter that says nothing to a person training a model: transformers'
    deprecation notices about its own internals (raised through peft) and bitsandbytes'
    note about optional CPU kernels."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*will be removed in v6", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _watch_stop_file(run_dir: str, cancel, ended: threading.Event) -> None:
    """Cancel the run when the app asks for a stop through RUN/stop.request (every platform)."""
    from studio.core import runs

    # A request from before this process started is stale (the app clears those when it
    # starts a run); the slack covers the process start time's coarse clock.
    since = (runs.create_time(os.getpid()) or time.time()) - 2.0
    while not ended.wait(0.25):
        if runs.stop_requested(run_dir, since):
            if not cancel.cancelled:
                print("\nstop requested: stopping after this step (saving the adapter)...",
                      file=sys.stderr)  # fmt: skip
                cancel.cancel()
            break
    runs.clear_stop(run_dir)


def run(args) -> int:
    from studio.core.launch import launch, worker_rank
    from studio.core.train import CancelToken, run_training

    quiet_library_noise()

    cfg = build_config(args)
    rank = worker_rank()
    if rank is not None:
        return run_rank(args, cfg, rank)
    if not args.quiet:
        _print_estimate(cfg)
    if cfg.train.processes > 1:
        return launch(cfg, resume=args.resume, quiet=args.quiet)
    cancel = CancelToken()

    def on_signal(signum, frame):
        if cancel.cancelled:  # a second signal: stop now
            raise KeyboardInterrupt
        print("\nstopping after this step (saving the adapter)...", file=sys.stderr)
        cancel.cancel()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)
    ended = threading.Event()
    threading.Thread(target=_watch_stop_file, args=(cfg.output, cancel, ended), daemon=True).start()
    try:
        last = run_training(
            cfg, resume=args.resume, cancel=cancel, on_event=Progress(quiet=args.quiet)
        )
    finally:
        ended.set()
    if last is None or last.type == "error":
        return 1
    if last.type == "done" and last.status == "stopped":
        return 130
    samples = (
        args.samples if args.samples is not None else (3 if args.demo and not args.quiet else 0)
    )
    if samples > 0:
        _print_samples(cfg, samples)
    return 0


def run_rank(args, cfg, rank: int) -> int:
    """One rank under torchrun. Stopping goes through RUN/stop.request (every rank sees it
    and they stop at the same step); torchrun's SIGTERM, sent when another rank failed,
    ends this one at once. Exit 0 when done or stopped (the launcher reads which from
    events.jsonl), 1 when training failed, 2 on bad input."""
    from studio.core.errors import StudioError
    from studio.core.launch import record_rank_error
    from studio.core.train import CancelToken, run_training

    cancel = CancelToken()
    ended = threading.Event()
    threading.Thread(target=_watch_stop_file, args=(cfg.output, cancel, ended), daemon=True).start()
    progress = Progress(quiet=args.quiet or rank != 0)
    try:
        last = run_training(cfg, resume=args.resume, cancel=cancel, on_event=progress)
    except StudioError as e:
        record_rank_error(e.message, "input")
        raise
    except BaseException as e:
        record_rank_error(f"{type(e).__name__}: {e}")
        raise
    finally:
        ended.set()
    if last is None or last.type == "error":
        record_rank_error(last.message if last is not None else "ended without an event")
        return 1
    return 0


def _print_samples(cfg, n: int) -> None:
    """Base vs tuned answers to n held-out prompts, and how many ended their turn."""
    from studio.core.after_run import compare_with_base

    print(f"answering {n} held-out prompts with the base and the tuned model...", file=sys.stderr)
    try:
        result = compare_with_base(cfg.output, n, device=cfg.model.device)
    except Exception as e:  # the run is done and saved; a failed sample must not fail it
        print(f"(no sample answers: {str(e).splitlines()[0] if str(e) else type(e).__name__})",
              file=sys.stderr)  # fmt: skip
        return
    cut = f" [cut at {result.max_new_tokens} tokens]"
    for s in result.samples:
        print(f"\n> {s.prompt}")
        print(f"  base:  {s.base}{'' if s.base_stopped else cut}")
        print(f"  tuned: {s.tuned}{'' if s.tuned_stopped else cut}")
    print("\n" + result.summary())


def _rewards(metrics: dict) -> str:
    """A preference run's reward margin and accuracy, for the progress line ("" otherwise)."""
    if "rewards/margins" not in metrics:
        return ""
    return f" margin {metrics['rewards/margins']:.3f} acc {metrics['rewards/accuracies']:.0%}"
