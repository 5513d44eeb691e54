"""Gradient compression for DDP: fp16/bf16 through torch's hooks, int8/int4 through ours.

int8/int4 are block-wise symmetric: every BLOCK values share one bf16 scale (absmax / qmax,
rounded up so no value clips; bf16 rather than fp16, whose subnormals would round the
scales of small gradients, ~1e-5, by 20% and more), values round to the nearest integer in [-qmax, qmax] (int4:
two a byte). Each rank all-gathers the others' compressed buckets and averages their
dequantized values, so every rank ends with the same gradient. Error feedback keeps, per
bucket, what rounding lost this step and adds it to the next step's gradient, so the
error does not accumulate into a bias (Seide et al. 2014; Karimireddy et al. 2019).
The first WARMUP_STEPS steps are sent uncompressed: the early gradients are the largest
and DDP rebuilds its buckets after the first step.

The hook returns the all-gather's future chained with the decoding (`Future.then`), so
DDP keeps launching the next buckets while earlier ones are in flight: the backward pass
is not serialised by compression.
"""

from __future__ import annotations

BLOCK = 128
WARMUP_STEPS = 5
QMAX = {8: 127, 4: 7}
_ROUND_UP = 1 + 2**-7  # > bf16's relative rounding error: the stored scale never undershoots


def quantize(x, bits: int):
    """(payload uint8, scales bf16) for a 1-D float tensor."""
    import torch

    qmax = QMAX[bits]
    n = x.numel()
    padded = torch.nn.functional.pad(x.float(), (0, (-n) % BLOCK)).view(-1, BLOCK)
    scale = (padded.abs().amax(dim=1) / qmax * _ROUND_UP).to(torch.bfloat16)
    safe = scale.float().clamp(min=torch.finfo(torch.bfloat16).tiny)
    q = torch.round(padded / safe[:, None]).clamp(-qmax, qmax).to(torch.int8)
    if bits == 8:
        return q.view(torch.uint8).flatten(), scale
    u = (q + 8).to(torch.uint8).view(-1, 2)  # 1..15 in a nibble
    return (u[:, 0] | (u[:, 1] << 4)).contiguous(), scale


def dequantize(payload, scale, n: int, bits: int):
    import torch

    if bits == 8:
        q = payload.view(torch.int8).float()
    else:
        lo = (payload & 0x0F).to(torch.int16) - 8
        hi = (payload >> 4).to(torch.int16) - 8
        q = torch.stack([lo, hi], dim=1).flatten().float()
    values = q.view(-1, BLOCK) * scale.float()[:, None]
    return values.flatten()[:n]


def message_bytes(n: int, bits: int) -> int:
    blocks = -(-n // BLOCK)
    return blocks * BLOCK * bits // 8 + blocks * 2


def pack(x, bits: int):
    """One uint8 message (payload then bf16 scales) for a 1-D tensor."""
    import torch

    payload, scale = quantize(x, bits)
    return torch.cat([payload, scale.view(torch.uint8)])


def unpack(message, n: int, bits: int):
    import torch

    blocks = -(-n // BLOCK)
    split = blocks * BLOCK * bits // 8
    scale = message[split:].contiguous().view(torch.bfloat16)
    return dequantize(message[:split], scale, n, bits)


class CommState:
    """What the hooks share with the loop: the step, the error feedback, bytes counters."""

    def __init__(self, kind: str, group=None, error_feedback: bool = True):
        self.kind = kind
        self.group = group
        self.error_feedback = error_feedback
        self.step = 0
        self.errors: dict = {}
        self.sent = 0
        self.raw = 0

    def take_bytes(self) -> tuple[int, int]:
        """(sent, uncompressed fp32) bytes of this rank's gradient messages since last asked."""
        out = (self.sent, self.raw)
        self.sent = self.raw = 0
        return out


def _allreduce_mean(state: CommState, buffer):
    import torch.distributed as dist

    world = dist.get_world_size(state.group)
    buffer.div_(world)
    fut = dist.all_reduce(buffer, group=state.group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def quantized_hook(state: CommState, bucket):
    """DDP communication hook for int8/int4 (see the module docstring)."""
    import torch
    import torch.distributed as dist

    buffer = bucket.buffer()
    n = buffer.numel()
    state.raw += n * 4
    if state.step < WARMUP_STEPS:
        state.sent += n * buffer.element_size()
        return _allreduce_mean(state, buffer)
    bits = 8 if state.kind == "int8" else 4
    x = buffer.float()
    key = (bucket.index(), n)
    if state.error_feedback and key in state.errors:
        x = x + state.errors[key]
    message = pack(x, bits)
    if state.error_feedback:
        state.errors[key] = x - unpack(message, n, bits)
    world = dist.get_world_size(state.group)
    gathered = torch.empty(world * message.numel(), dtype=torch.uint8, device=message.device)
    state.sent += message.numel()
    work = dist.all_gather_into_tensor(gathered, message, group=state.group, async_op=True)

    def decode(fut):
        parts = gathered.view(world, -1)
        total = sum(unpack(parts[r], n, bits) for r in range(world))
        buffer.copy_(total / world)
        return buffer

    return work.get_future().then(decode)


def half_hook(state: CommState, bucket):
    """fp16/bf16 compression through torch's own hooks, counting bytes."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    n = bucket.buffer().numel()
    state.raw += n * 4
    state.sent += n * 2
    hook = (
        default_hooks.fp16_compress_hook
        if state.kind == "fp16"
        else default_hooks.bf16_compress_hook
    )
    return hook(state.group, bucket)


def plain_hook(state: CommState, bucket):
    """DDP's default all-reduce (mean), counting bytes."""
    buffer = bucket.buffer()
    state.raw += buffer.numel() * 4
    state.sent += buffer.numel() * buffer.element_size()
    return _allreduce_mean(state, buffer)


def register(ddp, kind: str, error_feedback: bool = True) -> CommState:
    """Install the hook for `kind` on a DDP module and return the shared state."""
    state = CommState(kind, error_feedback=error_feedback)
    hook = {"none": plain_hook, "fp16": half_hook, "bf16": half_hook}.get(kind, quantized_hook)
    ddp.register_comm_hook(state, hook)
    return state
