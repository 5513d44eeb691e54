"""The SFT objective as a module: a batch in, (sum of token losses, token count) out.

A torch module so that DDP can wrap it: the fast path calls the decoder and the LM head
separately, and DDP only sees a forward pass that goes through its own wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studio.core.data.examples import IGNORE

SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")
"""Config keys of models that change their logits after the LM head."""


class LossFn(torch.nn.Module):
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

    def forward(self, batch):
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
