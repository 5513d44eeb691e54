"""Preference tuning (train.mode dpo, orpo or simpo): the losses and the objective.

The losses are pure functions of per-pair figures, as TRL defines them (checked against TRL's
own code in tests/test_preference.py when trl is installed):

- DPO (sigmoid): -logsigmoid(beta * ((pc - rc) - (pr - rr))), p/r the policy's and the
  reference's summed log-probabilities of the chosen (c) and rejected (r) answers; rewards
  beta * (policy - reference). The reference is the same model with the adapter disabled
  (`model.disable_adapter()`, no gradient): no second copy of the weights.
- ORPO: NLL of the chosen answer (mean per token) + lambda * -logsigmoid(log odds ratio), the
  odds from the length-normalised (mean per token) log-probabilities; lambda is
  preference.beta, as TRL's ORPOConfig.beta; rewards beta * mean log-probability (TRL's).
  TRL averages the NLL over all the batch's chosen tokens; here it is each pair's own mean
  (the ORPO paper's definition), so every pair weighs the same whatever its length.
- SimPO: -logsigmoid(beta * (mean_c - mean_r) - gamma): TRL's CPOTrainer with
  loss_type="simpo" and cpo_alpha=0, where simpo_gamma is this gamma (the target margin
  itself; the SimPO paper's gamma_beta_ratio is gamma / beta). Rewards beta * mean logp.

The objective computes every sequence's log-probability in one forward pass over packed rows
holding both answers of each pair (studio.core.data.pairs), and sums over pairs: the loop's
units are pairs, and the metrics (TRL's names) are sums it divides by them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from studio.core.objective import LossFn

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


# ----------------------------------------------------------------------------- the losses


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """(loss, chosen reward, rejected reward) per pair, from summed log-probabilities."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected))
    return loss, beta * chosen.detach(), beta * rejected.detach()


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, without cancellation on either side of -ln 2."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(mean_chosen, mean_rejected, beta: float):
    """(loss, chosen reward, rejected reward) per pair, from mean log-probabilities per token.

    The loss is NLL(chosen) + beta * -logsigmoid(log odds(chosen) - log odds(rejected))."""
    # A mean of exactly 0 (probability 1 in float32) has infinite log odds, and an inf there
    # makes a NaN gradient even where the pair is masked out; a hair below 0 changes nothing else.
    mean_chosen, mean_rejected = mean_chosen.clamp(max=-1e-6), mean_rejected.clamp(max=-1e-6)
    log_odds = (mean_chosen - mean_rejected) - (log1mexp(mean_chosen) - log1mexp(mean_rejected))
    loss = -mean_chosen - beta * F.logsigmoid(log_odds)
    return loss, beta * mean_chosen.detach(), beta * mean_rejected.detach()


def simpo_loss(mean_chosen, mean_rejected, beta: float, gamma: float):
    """(loss, chosen reward, rejected reward) per pair, from mean log-probabilities per token."""
    loss = -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)
    return loss, beta * mean_chosen.detach(), beta * mean_rejected.detach()


# ----------------------------------------------------------------------------- the objective


class PreferenceLoss(LossFn):
    """Sum of the pairs' losses over a batch of pair rows, and the number of pairs."""

    def __init__(self, model, mode: str, beta: float, gamma: float = 0.0):
        super().__init__(model)
        self.mode, self.beta, self.gamma = mode, beta, gamma
        reference = "the base model with the adapter disabled" if mode == "dpo" else "none needed"
        self.notes = [f"{mode}: beta {beta:g}" + (f", gamma {gamma:g}" if mode == "simpo" else "")
                      + f"; reference model: {reference}"]  # fmt: skip

    def collate(self, examples, rows, pad_id: int) -> dict:
        from studio.core.data.pairs import collate_pairs

        return collate_pairs(examples, rows, pad_id)

    def units(self, batch) -> int:
        return int(self._valid(batch).sum())

    @staticmethod
    def _valid(batch):
        """Which of the batch's pairs have labels on both sides (all, except in the no-op batch
        the loop makes when a process has no rows left)."""
        from studio.core.data.pairs import sequence_labels

        _, seq, count = sequence_labels(batch)
        tokens = torch.zeros(count, device=seq.device).index_add_(
            0, seq, torch.ones_like(seq, dtype=torch.float)
        )
        return (tokens[0::2] > 0) & (tokens[1::2] > 0)

    def sequence_logps(self, batch):
        """(summed log-probability, labelled tokens) of every sequence in the batch."""
        from studio.core.data.pairs import sequence_labels

        mask, seq, count = sequence_labels(batch)
        target = batch["labels"][:, 1:][mask]
        logits = self.label_logits(batch, mask)
        logp = -F.cross_entropy(logits.float(), target, reduction="none")
        sums = torch.zeros(count, device=logp.device).index_add(0, seq, logp)
        tokens = torch.zeros(count, device=logp.device).index_add_(0, seq, torch.ones_like(logp))
        return sums, tokens

    def reference_logps(self, batch):
        """The base model's summed log-probabilities: the same weights, adapter off."""
        with self.model.disable_adapter(), torch.no_grad():
            return self.sequence_logps(batch)[0]

    def forward(self, batch):
        if not self.checked:
            self.check_fast_path(batch)
        sums, tokens = self.sequence_logps(batch)
        valid = (tokens[0::2] > 0) & (tokens[1::2] > 0)
        means = sums / tokens.clamp(min=1)
        if self.mode == "dpo":
            ref = self.reference_logps(batch)
            loss, rc, rr = dpo_loss(sums[0::2], sums[1::2], ref[0::2], ref[1::2], self.beta)
        elif self.mode == "orpo":
            loss, rc, rr = orpo_loss(means[0::2], means[1::2], self.beta)
        elif self.mode == "simpo":
            loss, rc, rr = simpo_loss(means[0::2], means[1::2], self.beta, self.gamma)
        else:
            raise ValueError(f"unknown preference mode {self.mode!r}")
        rc, rr = rc[valid], rr[valid]
        figures = torch.stack([rc.sum(), rr.sum(), (rc - rr).sum(), (rc > rr).sum().float()])
        self.add_metrics(**dict(zip(METRICS, figures.tolist(), strict=True)))  # one device sync
        return loss[valid].sum(), int(valid.sum())


def make_objective(cfg, model) -> PreferenceLoss:
    """The objective of cfg.train.mode (one of PAIR_MODES) with cfg.preference's settings."""
    mode = cfg.train.mode
    return PreferenceLoss(model, mode, cfg.preference.beta_for(mode), cfg.preference.simpo_gamma)
