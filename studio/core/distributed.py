"""Several training processes through torchrun: a thin layer, the same loop at world size 1.

Set-up (the process group, the DDP wrap and its communication hook), which rows a rank
reads, and which sinks are live (events, checkpoints and the adapter on rank 0 only). With
one process nothing here talks to anything: `sum` returns its input, `wrap` the module.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

BUCKET_MB_MAX = 25.0  # DDP's default bucket size
BUCKETS_WANTED = 4  # small LoRA gradients still come in a few buckets, so sending overlaps backward


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (gloo has no AVG: everything goes as a SUM)."""
        if self.size == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def share(self, rows: list) -> list:
        """This rank's part of a global micro-batch (balanced: sizes differ by at most 1)."""
        base, extra = divmod(len(rows), self.size)
        start = self.rank * base + min(self.rank, extra)
        return rows[start : start + base + (1 if self.rank < extra else 0)]

    def wrap(self, module, compression: str = "none"):
        """(module to call for training, CommState or None): DDP with a counting hook."""
        if self.size == 1:
            return module, None
        from torch.nn.parallel import DistributedDataParallel as DDP

        from studio.core.optim import compression as comp

        frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
        frozen += [n for n, _ in module.named_buffers()]
        # Every rank loads the same base and seeds the same LoRA init: only the trainable
        # weights are broadcast from rank 0 at the start, not the whole base model.
        DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)
        trainable = sum(p.numel() * 4 for p in module.parameters() if p.requires_grad)
        bucket_mb = min(BUCKET_MB_MAX, max(0.25, trainable / BUCKETS_WANTED / 2**20))
        with warnings.catch_warnings():
            # Renamed in torch 2.13, but the new name still syncs buffers at start, which
            # is what this avoids (rotary tables are computed the same on every rank).
            warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)
            ddp = DDP(
                module,
                device_ids=[self.local_rank] if self.backend == "nccl" else None,
                bucket_cap_mb=bucket_mb,
                gradient_as_bucket_view=True,
                broadcast_buffers=False,
            )
        feedback = os.environ.get("STUDIO_NO_ERROR_FEEDBACK") != "1"  # benchmarks only
        return ddp, comp.register(ddp, compression, error_feedback=feedback)

    def leave_together(self) -> None:
        """Wait for every rank at the end of a run, before the process group is torn down.

        The other ranks have nothing to save and reached their teardown while rank 0 still
        wrote the adapter; once, in a full test run, rank 1 was then killed by SIGABRT at exit
        (a completed run reported failed). After the barrier every collective has finished on
        every rank, and they tear down together. Stopping is agreed at a step (an all-reduce),
        so every rank of a run that ends without an error reaches this."""
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def no_sync(module):
    """DDP's no_sync on gradient-accumulation micro-steps: reduce only on the last one."""
    return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()


def init_world(device: str) -> World:
    """The world torchrun describes in the environment (size 1 without torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)  # "cuda" then means this rank's GPU when loading
    if not dist.is_initialized():
        # A rank that dies is noticed by torchrun, which stops the others; the timeout only
        # bounds a collective that nobody will ever join.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return World(rank=rank, size=size, local_rank=local, backend=backend)
