"""Preference losses and the objective: hand-computed values, TRL's own code on the same
tensors (when trl is installed), the answer-only mask, and one forward for a packed batch."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from studio.core.config import LoraConfig
from studio.core.data.examples import IGNORE
from studio.core.data.pairs import build_pair_examples, collate_pairs, pair_rows
from studio.core.data.records import Record
from studio.core.data.templates import resolve_template
from studio.core.preference import PreferenceLoss, dpo_loss, orpo_loss, simpo_loss

T = torch.tensor

# ----------------------------------------------------------------------------- by hand


def test_dpo_loss_by_hand():
    # Log-ratios +1 (chosen) and -1 (rejected): beta * 2 = 0.2 inside the sigmoid.
    loss, rc, rr = dpo_loss(T([-10.0]), T([-12.0]), T([-11.0]), T([-11.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)))  # 0.598139
    assert (rc.item(), rr.item()) == pytest.approx((0.1, -0.1))


def test_orpo_loss_by_hand():
    # p(chosen) = 1/2 per token: odds 1; p(rejected) = 1/4: odds 1/3; log odds ratio ln 3.
    c, r = T([math.log(0.5)]), T([math.log(0.25)])
    loss, rc, rr = orpo_loss(c, r, beta=0.1)
    want = math.log(2) + 0.1 * math.log(4 / 3)  # NLL + beta * -logsigmoid(ln 3)
    assert loss.item() == pytest.approx(want)  # 0.721915
    assert (rc.item(), rr.item()) == pytest.approx((0.1 * math.log(0.5), 0.1 * math.log(0.25)))


def test_simpo_loss_by_hand():
    loss, rc, rr = simpo_loss(T([-1.0]), T([-1.5]), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)))  # 2 * 0.5 - 0.5 = 0.5
    assert (rc.item(), rr.item()) == pytest.approx((-2.0, -3.0))


def test_orpo_stays_finite_when_an_answer_is_certain():
    loss, _, _ = orpo_loss(T([0.0], requires_grad=True), T([-1.0]), beta=0.1)
    assert torch.isfinite(loss).all()


# ----------------------------------------------------------------------------- TRL's own code


def _trl_self(beta, **extra):
    """The attributes TRL's loss methods read from their trainer."""
    acc = SimpleNamespace(
        device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x, unwrap_model=lambda m: m
    )
    return SimpleNamespace(beta=beta, accelerator=acc, label_smoothing=0.0, **extra)


def test_orpo_and_simpo_match_trl_on_the_same_tensors():
    pytest.importorskip("trl")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    g = torch.Generator().manual_seed(0)
    c = -torch.rand(16, generator=g) * 3 - 0.01
    r = -torch.rand(16, generator=g) * 3 - 0.01
    # ORPO: TRL's loss is NLL - mean(odds term); with one pair a batch, NLL is the pair's own.
    terms, trc, trr, _, _ = ORPOTrainer.odds_ratio_loss(_trl_self(0.25), c, r)
    ours, rc, rr = orpo_loss(c, r, beta=0.25)
    torch.testing.assert_close(ours, -c - terms)
    torch.testing.assert_close((rc, rr), (trc, trr))
    # SimPO: CPOTrainer with loss_type simpo (cpo_alpha 0 adds no NLL), simpo_gamma = our gamma.
    cpo = _trl_self(2.5, alpha=0.0, loss_type="simpo", simpo_gamma=0.7)
    tl, trc, trr = CPOTrainer.cpo_loss(cpo, c, r)
    ours, rc, rr = simpo_loss(c, r, beta=2.5, gamma=0.7)
    torch.testing.assert_close(ours, tl)
    torch.testing.assert_close((rc, rr), (trc, trr))


PAIRS = [
    Record(1, [{"role": "user", "content": "What is 2 plus 2?"}], chosen="Four.", rejected="Five, I think."),
    Record(2, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
           chosen="Hello! How are you today?", rejected="Go away."),
    Record(3, [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Which one?"},
               {"role": "user", "content": "The sky."}], chosen="Blue.", rejected="Green, surely, or red."),
]  # fmt: skip


@pytest.fixture
def policy(tiny_model):
    """The tiny model with a LoRA adapter whose B weights are random, so policy != reference."""
    from transformers import AutoModelForCausalLM

    from studio.core.lora import apply_lora
    from studio.core.models import load_tokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = apply_lora(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    model.eval()
    tok = load_tokenizer(str(tiny_model))
    examples, stats = build_pair_examples(PAIRS, tok, resolve_template(tok), seq_len=256)
    assert stats.kept == 3 and len(examples) == 6
    return model, tok, examples


def _padded(examples, pad_id):
    """TRL's layout: every chosen sequence, then every rejected one, right-padded."""
    order = [e for e in examples[0::2]] + [e for e in examples[1::2]]
    width = max(len(e) for e in order)
    ids = torch.full((len(order), width), pad_id)
    mask = torch.zeros((len(order), width), dtype=torch.long)
    completion = torch.zeros_like(mask)
    for i, e in enumerate(order):
        ids[i, : len(e)] = T(e.input_ids)
        mask[i, : len(e)] = 1
        completion[i, : len(e)] = (T(e.labels) != IGNORE).long()
        completion[i, 0] = 0  # never predicted (as in our collate)
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": completion}


def _packed(examples, tok):
    """One batch of packed rows, and which example each of its sequences is (packing may put
    a later pair first in a row)."""
    rows = pair_rows([len(e) for e in examples], 256, 0, True)
    return collate_pairs(examples, rows, tok.pad_token_id), [i for row in rows for i in row]


def test_dpo_matches_trl_on_the_same_model_and_tokens(policy):
    pytest.importorskip("trl")
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    model, tok, examples = policy
    batch, order = _packed(examples, tok)
    assert batch["input_ids"].shape[0] < 3  # packed: pairs share rows
    ours = PreferenceLoss(model, "dpo", beta=0.2)
    with torch.no_grad():
        loss, pairs = ours(batch)
    metrics = ours.take_metrics()
    # TRL's DPOTrainer._compute_loss (sigmoid loss, PEFT reference = adapter disabled) on the
    # same weights and the same answer tokens, padded its way.
    add_fused_lm_head(
        model.get_base_model(), outputs=("log_probs", "entropy", "mean_logits", "is_top1")
    )
    trl = _trl_self(
        0.2, model=model, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=False,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None), ref_model=None,
        f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0],
        use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    with torch.no_grad():
        want = DPOTrainer._compute_loss(trl, model, _padded(examples, tok.pad_token_id), False)
    got = trl._metrics["eval"]
    assert pairs == 3 and abs(float(want) - math.log(2)) > 1e-3  # the adapter changes something
    assert float(loss) / pairs == pytest.approx(float(want), rel=1e-5)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert metrics[name] / pairs == pytest.approx(got[name][0], rel=1e-4, abs=1e-6), name


def test_mean_logps_match_trl_get_batch_logps(policy):
    pytest.importorskip("trl")
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    model, tok, examples = policy
    batch, order = _packed(examples, tok)
    with torch.no_grad():
        sums, tokens = PreferenceLoss(model, "orpo", beta=0.1).sequence_logps(batch)
        padded = _padded(examples, tok.pad_token_id)
        logits = model(
            input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]
        ).logits
    labels = padded["input_ids"].masked_fill(padded["completion_mask"] == 0, IGNORE)
    want = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    ours = torch.empty_like(sums)
    ours[order] = sums / tokens
    torch.testing.assert_close(torch.cat([ours[0::2], ours[1::2]]), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- mask and batch


def test_labels_cover_the_answer_only(policy):
    """Not the prompt, not an earlier assistant turn of a multi-turn prompt: the answer and
    its end-of-turn marker."""
    _, tok, examples = policy
    for k, record in enumerate(PAIRS):
        for example, answer in (
            (examples[2 * k], record.chosen),
            (examples[2 * k + 1], record.rejected),
        ):
            at = [i for i, t in enumerate(example.labels) if t != IGNORE]
            assert at == list(range(at[0], at[-1] + 1))  # one run, at the end
            assert tok.decode(example.labels[at[0] : at[-1] + 1]) == answer + "<|im_end|>"
            assert example.labels[at[0] : at[-1] + 1] == example.input_ids[at[0] : at[-1] + 1]
            assert tok.decode(example.input_ids[: at[0]]).endswith("<|im_start|>assistant\n")


def test_one_forward_gives_each_sequence_its_own_logp(policy):
    """Packed rows (both sides of several pairs in one row) give the same log-probabilities
    as each sequence alone, and the units are pairs."""
    model, tok, examples = policy
    fn = PreferenceLoss(model, "dpo", beta=0.1)
    batch, order = _packed(examples, tok)
    assert batch["seq_index"].max() == 5 and fn.units(batch) == 3
    with torch.no_grad():
        sums, _ = fn.sequence_logps(batch)
        for s, i in enumerate(order):
            alone = collate_pairs([examples[i]] * 2, [[0, 1]], tok.pad_token_id)
            assert sums[s].item() == pytest.approx(fn.sequence_logps(alone)[0][0].item(), abs=1e-4)


def test_a_batch_with_no_labels_counts_no_pair_and_adds_nothing(policy):
    """The loop's no-op batch (a process with no rows left) has its labels wiped."""
    model, tok, examples = policy
    fn = PreferenceLoss(model, "orpo", beta=0.1)
    batch = collate_pairs(examples, [[0, 1]], tok.pad_token_id)
    batch["labels"].fill_(IGNORE)
    loss, pairs = fn(batch)
    assert fn.units(batch) == 0 and pairs == 0 and loss.item() == 0.0
    assert fn.take_metrics()["rewards/accuracies"] == 0.0


def test_pairs_stay_together_in_rows():
    lengths = [30, 40, 10, 5, 60, 60, 20, 20]
    rows = pair_rows(lengths, 64, seed=1, packing=True)
    assert sorted(i for r in rows for i in r) == list(range(8))
    for row in rows:
        assert all(row[j] % 2 == 0 and row[j + 1] == row[j] + 1 for j in range(0, len(row), 2))
        assert sum(lengths[i] for i in row) <= 128 or len(row) == 2
    assert len(rows) < 4  # the short pairs share a row
    assert pair_rows(lengths, 64, seed=1, packing=False) == [[0, 1], [2, 3], [4, 5], [6, 7]]
