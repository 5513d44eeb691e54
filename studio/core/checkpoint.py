"""Atomic checkpoints: written to a temporary folder, then renamed into place.

A kill at any moment leaves the previous checkpoint whole. A checkpoint holds the adapter
(standard PEFT layout), optimizer and scheduler state, RNG state and `state.json` (step and
data position). `state.json` is written last, so a folder without it is never used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CKPT_PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{CKPT_PREFIX}{step:06d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_folder(final: Path) -> None:
    """Finish a replacement that a kill cut between its two renames (see atomic_folder).

    Replacing moves `final` aside to `.old-NAME`, then the complete `.tmp-NAME` into place.
    A kill between the two leaves no `final`: the new folder (already whole) is moved in,
    or failing that the old one is moved back.
    """
    final = Path(final)
    old = final.parent / f".old-{final.name}"
    if final.exists() or not old.exists():
        return
    tmp = final.parent / f".tmp-{final.name}"
    os.rename(tmp if tmp.exists() else old, final)


def prepare_tmp(final: Path) -> Path:
    """The empty `.tmp-NAME` folder beside `final` to write into (a stale one is removed)."""
    final = Path(final)
    recover_folder(final)
    tmp = final.parent / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_tmp(tmp: Path, final: Path) -> Path:
    """fsync everything in `tmp`, then rename it to `final` (replacing an older one)."""
    final = Path(final)
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if final.exists():
        old = final.parent / f".old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)
    return final


def atomic_folder(final: Path, write) -> Path:
    """Call write(tmp_dir), then rename tmp_dir to `final` (replacing an older one)."""
    tmp = prepare_tmp(final)
    write(tmp)
    return commit_tmp(tmp, final)


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    state: dict,
    scaler=None,
    *,
    rngs: list[dict] | None = None,
    extra: dict | None = None,
) -> Path:
    """`rngs`: every training process's RNG state (rank order; this process's if None).
    `extra`: the optimizer package's own state (tiers, sensitivity statistics)."""
    import torch

    def write(tmp: Path):
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if rngs is not None:
            rng = dict(rngs[0], ranks=rngs)
        torch.save(rng, tmp / "rng.pt")
        if extra:
            torch.save(extra, tmp / "optim_extra.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "state.json").write_text(json.dumps(dict(state, step=step), indent=2))

    return atomic_folder(Path(ckpt_dir) / checkpoint_name(step), write)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Whole checkpoints, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    for old in d.glob(f".old-{CKPT_PREFIX}*"):
        recover_folder(d / old.name.removeprefix(".old-"))
    found = [
        p for p in d.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in Path(ckpt_dir).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_state(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / "state.json").read_text())


def read_extra(ckpt: Path) -> dict:
    """The optimizer package's state saved with a checkpoint ({} if it had none)."""
    import torch

    path = Path(ckpt) / "optim_extra.pt"
    return torch.load(path, weights_only=True) if path.is_file() else {}


def load_training_state(
    ckpt: Path, model, optimizer, scheduler, scaler=None, *, rank: int = 0
) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG (this rank's) from a checkpoint."""
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    weights = load_file(str(ckpt / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    rng = rng["ranks"][rank] if "ranks" in rng else rng
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if scaler is not None and (ckpt / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(ckpt / "scaler.pt", weights_only=True))
    return read_state(ckpt)
