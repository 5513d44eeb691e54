"""Training objectives: a batch in, (sum of losses, how many units it sums over) out.

The loop never asks which mode it trains: it calls the objective (the `Objective`
protocol below) and divides the global sum by the global unit count. SFT's units are
labelled tokens; a preference objective's are pairs. Each is a torch module so that DDP can
wrap it: the fast path calls the decoder and the LM head separately, and DDP only sees a
forward pass that goes through its own wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studio.core.data.examples import IGNORE

SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")
"""Config keys of models that change their logits after the LM head."""


class Objective(torch.nn.Module):
    """What the training loop calls. Subclasses implement `forward`.

    - `collate(examples, rows, pad_id)`: the batch for these rows (a dict of tensors).
    - `units(batch)`: how many units the batch's loss is a sum over (the loop sums them over
      micro-batches and ranks and divides the loss by the total).
    - `forward(batch)`: (sum of losses over the batch's units as a tensor, units).
    - `take_metrics()`: sums of extra figures since the last call ({name: sum over units});
      the loop divides them by the same unit count and puts them in the Step (or Eval) event.
    """

    def __init__(self):
        super().__init__()
        self._metrics: dict[str, float] = {}

    def collate(self, examples, rows, pad_id: int) -> dict:
        from studio.core.data.packing import collate

        return collate(examples, rows, pad_id)

    def units(self, batch) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def add_metrics(self, **sums: float) -> None:
        for k, v in sums.items():
            self._metrics[k] = self._metrics.get(k, 0.0) + float(v)

    def take_metrics(self) -> dict[str, float]:
        out, self._metrics = self._metrics, {}
        return out


class LossFn(Objective):
    """Sum of token losses and the token count for a batch.

    Logits are computed only where a label is, which skips the LM head on prompt tokens
    (the fast path); models with logit post-processing use the full forward instead.
    """

    def __init__(self, model):
        super().__init__()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        conf = base.config
        self.model = model
        # Plain attributes, not submodules: they are parts of self.model already.
        self.__dict__["decoder"] = base.get_decoder() if hasattr(base, "get_decoder") else None
        self.__dict__["head"] = base.get_output_embeddings()
        special = any(getattr(conf, k, None) for k in SCALED_LOGITS)
        self.fast = self.decoder is not None and self.head is not None and not special
        self.checked = not self.fast

    def check_fast_path(self, batch) -> None:
        """Use the fast path only if it gives the model's own logits (checked once, on a few
        tokens, without dropout): some models scale or cap their logits after the head
        (Granite divides by logits_scaling, Falcon-H1 multiplies...), which it would skip."""
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

    def labelled_states(self, batch, mask):
        """What the LM head needs at the labelled positions (`mask` over the shifted tokens):
        hidden states on the fast path (the head is applied later, so a caller may apply it
        in chunks), else the model's own logits there."""
        if not self.checked:
            self.check_fast_path(batch)
        ids, pos = batch["input_ids"], batch["position_ids"]
        if self.fast:
            hidden = self.decoder(input_ids=ids, position_ids=pos, use_cache=False)
            return hidden.last_hidden_state[:, :-1][mask]
        return self.model(input_ids=ids, position_ids=pos, use_cache=False).logits[:, :-1][mask]

    def label_logits(self, batch, mask):
        """The logits at the labelled positions, computed only there on the fast path."""
        states = self.labelled_states(batch, mask)
        return self.head(states) if self.fast else states

    def forward(self, batch):
        target = batch["labels"][:, 1:]
        mask = target != IGNORE
        logits = self.label_logits(batch, mask)
        loss = F.cross_entropy(logits.float(), target[mask], reduction="sum")
        return loss, int(mask.sum())
