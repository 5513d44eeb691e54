"""One base model in memory with every run's adapter beside it, switched per model.

The base is loaded once; each run's adapter is injected under its own name (peft's
`load_adapter`) and chosen with `set_adapter`; the base itself answers inside
`with model.disable_adapter():`. N runs cost one copy of the weights plus N small adapters.
Every adapter is checked against the base from its file's header before any is injected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from studio.core.config import ModelConfig
from studio.core.errors import ModelError, StudioError
from studio.core.evaluate.inputs import BASE_KEY, RunInput


@dataclass
class Entry:
    """One model of the comparison: the base, or the base with one run's adapter."""

    key: str
    """Its name in the report: "base" or the run's name."""
    adapter_name: str
    """peft's name for its adapter ("" for the base). Not the run's name: peft keeps adapters
    in a ModuleDict, whose keys may not hold a dot, and run folders often do."""
    adapter_path: str
    template: str
    """The run's data.template (the base uses the first run's: its prompts as trained)."""


def model_config(runs: list[RunInput], device: str) -> ModelConfig:
    """The first run's loading settings (dtype, quantization, remote code) on `device`."""
    first = runs[0]
    if first.cfg is None:
        return ModelConfig(path=first.base_model, device=device)
    m = first.cfg.model
    return ModelConfig(
        path=first.base_model,
        dtype=m.dtype,
        device=device,
        quant=m.quant,
        double_quant=m.double_quant,
        trust_remote_code=m.trust_remote_code,
        allow_pickle=m.allow_pickle,
    )


def entries(runs: list[RunInput], with_base: bool) -> list[Entry]:
    out = [Entry(BASE_KEY, "", "", runs[0].template)] if with_base else []
    out += [Entry(r.key, f"a{i}", str(r.adapter), r.template) for i, r in enumerate(runs)]
    return out


class Session:
    def __init__(self, loaded, tokenizer, runs: list[RunInput], with_base: bool):
        self.net = loaded.model
        self.tokenizer = tokenizer
        self.device = loaded.device
        self.entries = entries(runs, with_base)
        self.peft = None
        self._attach(runs)
        self.model = self.peft

    def _attach(self, runs: list[RunInput]) -> None:
        from studio.core.lora import check_adapter_fits

        self.net.eval()
        for run in runs:  # all checked first: a misfit never leaves half the adapters injected
            try:
                check_adapter_fits(self.net, run.adapter)
            except ModelError as e:
                raise ModelError(
                    f"runs: {e.message.removeprefix('adapter: ')}", field="runs"
                ) from None
        from peft import PeftModel

        for entry, run in zip([e for e in self.entries if e.adapter_name], runs, strict=True):
            try:
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(
                        self.net, str(run.adapter), adapter_name=entry.adapter_name,
                        is_trainable=False,
                    )  # fmt: skip
                else:
                    self.peft.load_adapter(
                        str(run.adapter), adapter_name=entry.adapter_name, is_trainable=False
                    )
            except Exception as e:  # names that fit the header check but not peft's layout
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelError(
                    f"runs: {run.adapter} does not fit the base model {run.base_model} ({first})",
                    field="runs",
                ) from None
        self.peft.eval()

    @contextlib.contextmanager
    def using(self, entry: Entry) -> Iterator[object]:
        """The model answering as `entry` for the duration of the block."""
        if not entry.adapter_name:
            with self.peft.disable_adapter():
                yield self.peft
        else:
            self.peft.set_adapter(entry.adapter_name)
            yield self.peft

    def template(self, name: str):
        from studio.core.infer import chat_template

        return chat_template(self.tokenizer, name)

    def context_length(self) -> int | None:
        from studio.core.models import context_length

        return context_length(self.net.config.to_dict())

    def stop_ids(self, template) -> set[int]:
        from studio.core.infer import _stop_ids  # the chat's own stop rules, not a copy

        return _stop_ids(self.tokenizer, self.net, template)


def load_base_tokenizer(runs: list[RunInput], device: str):
    """The base's tokenizer alone: enough to check the data before the weights load."""
    from studio.core.models import load_tokenizer

    cfg = model_config(runs, device)
    try:
        return load_tokenizer(cfg.path, cfg.trust_remote_code)
    except StudioError as e:
        raise type(e)(f"the base model {cfg.path}: {e.message}", field=e.field) from None


def load_session(runs: list[RunInput], tokenizer, device: str, with_base: bool) -> Session:
    from studio.core.models import load_model

    cfg = model_config(runs, device)
    try:
        loaded = load_model(cfg, with_tokenizer=False)
    except StudioError as e:
        raise type(e)(f"the base model {cfg.path}: {e.message}", field=e.field) from None
    return Session(loaded, tokenizer, runs, with_base)
