"""The optimizer package: groups and their learning rates, 8-bit AdamW, sensitivity tiers,
and the int8/int4 gradient compression (round trip, error feedback, the DDP hook)."""

import os

import pytest
import torch

from studio.core.config import LoraConfig, TrainConfig
from studio.core.errors import ConfigError
from studio.core.optim import build_optim, state_bytes
from studio.core.optim import compression as comp
from studio.core.optim.groups import kind_of, module_key, tier_scales


@pytest.fixture
def lora_model(tiny_model):
    from transformers import AutoModelForCausalLM

    from studio.core.lora import apply_lora

    torch.manual_seed(0)
    return apply_lora(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0),
    )


def group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_loraplus_puts_b_matrices_at_ratio_times_the_lr_and_keeps_weight_decay(lora_model):
    t = TrainConfig(lr=1e-4, loraplus_ratio=16, weight_decay=0.05)
    opt = build_optim(lora_model, t, 10, "cpu").optimizer
    named = [(n, p) for n, p in lora_model.named_parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    for name, p in named:
        group = group_of(opt, p)
        want = 16e-4 if ".lora_B." in name else 1e-4
        assert group["lr"] == pytest.approx(want), name
        # peft's create_loraplus_optimizer would have set 0 here without a word.
        assert group["weight_decay"] == 0.05, name
    assert any(".lora_B." in n for n, _ in named) and any(".lora_A." in n for n, _ in named)


def test_without_loraplus_every_parameter_trains_at_the_lr(lora_model):
    opt = build_optim(lora_model, TrainConfig(lr=3e-4), 10, "cpu").optimizer
    lrs = {g["lr"] for g in opt.param_groups if g["params"]}
    assert lrs == {3e-4}


def test_names_map_to_modules_and_kinds():
    a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
    assert module_key(a) == module_key(b) == "base_model.model.model.layers.0.self_attn.q_proj"
    assert (kind_of(a), kind_of(b)) == ("A", "B")
    assert tier_scales(3, 2.0) == [2.0, 1.0, 0.5]
    assert tier_scales(5, 2.0) == [4.0, 2.0, 1.0, 0.5, 0.25]


def test_config_refuses_bad_optimizer_settings():
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="train.loraplus_ratio"):
        TrainConfig(loraplus_ratio=0.5)
    with pytest.raises(ConfigError, match="odd"):
        TrainConfig(sensitivity_tiers=4)
    with pytest.raises(ConfigError, match="train.grad_compression"):
        TrainConfig(grad_compression="int2")


def fake_grads(model, loud: str):
    """Gradients of 1 everywhere, 100 on the module whose name contains `loud`."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data.fill_(0.1)
            p.grad = torch.full_like(p, 100.0 if loud in name else 1.0)


def test_sensitivity_tiers_follow_the_measured_importance(lora_model):
    t = TrainConfig(lr=1e-3, param_groups="sensitivity", sensitivity_every=2, loraplus_ratio=4)
    optim = build_optim(lora_model, t, 10, "cpu")
    modules = sorted({module_key(n) for n, p in lora_model.named_parameters() if p.requires_grad})
    loud = "layers.1.mlp.down_proj"
    assert optim.after_backward(0) == []  # not due before step 2
    fake_grads(lora_model, loud)
    logs = optim.after_backward(1)
    assert logs and "parameter groups at step 2" in logs[0] and "tier 1" in logs[0]
    tiers = optim.groups.tier
    assert tiers[next(m for m in modules if loud in m)] == 0  # the most sensitive: tier 1
    counts = [sum(1 for v in tiers.values() if v == k) for k in range(3)]
    assert sum(counts) == len(modules) and max(counts) - min(counts) <= 1
    # The optimizer's groups hold exactly those parameters, at tier lr (x4 for B with LoRA+).
    for name, p in lora_model.named_parameters():
        if p.requires_grad:
            scale = [2.0, 1.0, 0.5][tiers[module_key(name)]] * (4 if ".lora_B." in name else 1)
            assert group_of(optim.optimizer, p)["lr"] == pytest.approx(1e-3 * scale), name


def test_moving_a_parameter_between_tiers_keeps_its_optimizer_state(lora_model):
    t = TrainConfig(param_groups="sensitivity", sensitivity_every=1)
    optim = build_optim(lora_model, t, 10, "cpu")
    fake_grads(lora_model, "layers.0.self_attn.q_proj")
    optim.optimizer.step()
    p = next(p for n, p in lora_model.named_parameters() if "layers.0.self_attn.q_proj.lora_A" in n)
    before = optim.optimizer.state[p]["exp_avg"].clone()
    optim.after_backward(0)
    assert group_of(optim.optimizer, p)["lr"] == pytest.approx(t.lr * 2.0)
    assert torch.equal(optim.optimizer.state[p]["exp_avg"], before)
    # and the layout (tiers, statistics) round-trips through a checkpoint's state
    saved = optim.state_dict()
    other = build_optim(lora_model, t, 10, "cpu")
    other.load_state_dict(saved)
    assert other.groups.tier == optim.groups.tier
    other.optimizer.load_state_dict(optim.optimizer.state_dict())  # same layout: loads


def test_adamw_8bit_updates_with_8bit_state(lora_model):
    t = TrainConfig(optimizer="adamw_8bit", lr=1e-2)
    optim = build_optim(lora_model, t, 10, "cpu", min_8bit_size=0)
    fake_grads(lora_model, "nothing")
    params = [p for p in lora_model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optim.optimizer.step()
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(params, before, strict=True)]
    # AdamW's first step moves every weight by about lr (sign of the gradient).
    assert min(moved) > 5e-3 and max(moved) < 2e-2
    dtypes = {
        v.dtype for s in optim.optimizer.state.values() for k, v in s.items() if k == "state1"
    }
    assert dtypes == {torch.uint8}

    # On tensors of real size the state takes about a quarter of AdamW's two fp32 moments.
    big = [torch.nn.Parameter(torch.randn(512, 512)) for _ in range(2)]
    sizes = []
    for kind in ("adamw", "adamw_8bit"):
        from studio.core.optim.factory import make_optimizer

        opt = make_optimizer([{"params": big, "lr": 1e-3}], kind, "cpu")
        for p in big:
            p.grad = torch.ones_like(p)
        opt.step()
        sizes.append(state_bytes(opt))
    assert sizes[0] >= 2 * 2 * 512 * 512 * 4  # two fp32 moments (and a step counter)
    assert sizes[1] < 0.27 * sizes[0]


@pytest.mark.parametrize("bits", [4, 8])
def test_round_trip_is_within_half_a_quantization_step(bits):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1000, generator=gen) * torch.logspace(-4, 1, 1000)
    message = comp.pack(x, bits)
    assert message.numel() == comp.message_bytes(1000, bits)
    back = comp.unpack(message, 1000, bits)
    payload, scale = comp.quantize(x, bits)
    step = scale.float().repeat_interleave(comp.BLOCK)[:1000]
    assert torch.all((x - back).abs() <= step / 2 + 1e-12)
    assert message.numel() < x.numel() * 4 * (bits + 1) / 32  # ~bits/32 of fp32, plus scales


def test_int4_packs_two_values_a_byte_and_zero_stays_zero():
    x = torch.zeros(256)
    x[3], x[200] = 7.0, -7.0
    payload, scale = comp.quantize(x, 4)
    assert payload.numel() == 128 and payload.dtype == torch.uint8
    back = comp.dequantize(payload, scale, 256, 4)
    assert back[3] == pytest.approx(7.0, rel=1e-2) and back[200] == pytest.approx(-7.0, rel=1e-2)
    assert torch.count_nonzero(back) == 2


def test_error_feedback_identity():
    """g + e_old = dequant(sent) + e_new, exactly as the hook computes it."""
    gen = torch.Generator().manual_seed(2)
    e_old = torch.randn(300, generator=gen) * 0.01
    g = torch.randn(300, generator=gen)
    x = g + e_old
    message = comp.pack(x, 4)
    sent = comp.unpack(message, 300, 4)
    e_new = x - sent
    assert torch.allclose(g + e_old, sent + e_new, atol=1e-7)
    assert e_new.abs().max() > 0  # int4 does lose something, which feedback carries over


def _hook_worker(rank, world, port, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(8, 300, generator=gen)  # each rank its own batch
    for kind in ("int4", "int8"):
        torch.manual_seed(0)
        model = torch.nn.Linear(300, 2, bias=False)
        ddp = DDP(model)
        state = comp.register(ddp, kind)
        state.step = comp.WARMUP_STEPS  # past the uncompressed warm-up
        ddp(x).pow(2).sum().backward()
        # The exact mean, for comparison: a plain all-reduce of the same local gradient.
        torch.manual_seed(0)
        ref = torch.nn.Linear(300, 2, bias=False)
        ref(x).pow(2).sum().backward()
        mean = ref.weight.grad.clone()
        dist.all_reduce(mean)
        mean /= world
        sent, raw = state.take_bytes()
        # plain lists: tensors sent through a queue die with the process
        out.put((kind, rank, model.weight.grad.tolist(), mean.tolist(), sent, raw))
    dist.destroy_process_group()


def test_the_ddp_hook_averages_compressed_gradients_on_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hook_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in range(4))
    for p in procs:
        p.join(timeout=60)
    for kind in ("int4", "int8"):
        (_, _, g0, mean, sent, raw), (_, _, g1, _, _, _) = [r for r in results if r[0] == kind]
        g0, g1, mean = torch.tensor(g0), torch.tensor(g1), torch.tensor(mean)
        assert torch.equal(g0, g1), kind  # every rank ends with the same gradient
        bits = 4 if kind == "int4" else 8
        # Each rank's rounding is at most half a step of its block's scale (absmax / qmax).
        bound = mean.abs().max() * 4 / comp.QMAX[bits]
        assert (g0 - mean).abs().max() <= bound, kind
        assert (g0 - mean).abs().max() > 0, kind  # it was compressed, not an exact all-reduce
        assert raw == 600 * 4 and sent == comp.message_bytes(600, bits), kind
