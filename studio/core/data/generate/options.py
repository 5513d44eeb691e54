"""What a data generation is asked to do: one dataclass, validated on construction.

The CLI flags, the Data page's Generate form and `studio.generate_data(...)` are views of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from studio.core.errors import ConfigError

MODES = ("answer", "paraphrase", "self-instruct", "pairs")
QUANTS = ("none", "8bit", "4bit")


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}", field=name)


@dataclass
class GenerateOptions:
    mode: str
    """answer, paraphrase, self-instruct or pairs (see studio.core.data.generate)."""
    input: str
    """The prompts (answer, pairs), instructions (paraphrase) or seed records (self-instruct)."""
    output: str
    """The JSONL written row by row; an existing one is continued (see `overwrite`)."""
    model: str = ""
    """A local model (folder or hub id; a run folder or adapter works with `adapter`)."""
    adapter: str = ""
    """An adapter or run folder on top of `model` (optional)."""
    quant: str = "none"
    """Load the local model in 8 or 4 bits (bitsandbytes, CUDA)."""
    device: str = "auto"
    endpoint: str = ""
    """An OpenAI-compatible base URL (http://host:port/v1) instead of a local model."""
    endpoint_model: str = ""
    """The model name the endpoint serves."""
    api_key: str = ""
    """Sent as a Bearer token; never written to the output."""
    n: int = 2
    """paraphrase: rewordings of each instruction."""
    count: int = 20
    """self-instruct: new instructions to make."""
    regenerate: bool = False
    """paraphrase: answer each rewording anew instead of keeping the original answer."""
    judge_url: str = ""
    """pairs: an OpenAI-compatible endpoint that picks the better answer (optional)."""
    judge_model: str = ""
    judge_key: str = ""
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 256
    seed: int = 0
    """Every item's sampling is seeded from this and the item's key: the same run twice
    writes the same rows."""
    batch_size: int = 8
    """Prompts per batch (local model: one left-padded batch; endpoint: parallel requests)."""
    overwrite: bool = False
    """Start the output afresh instead of continuing it."""
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __post_init__(self):
        _check(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}; got {self.mode!r}")
        _check(bool(str(self.input).strip()), "input", "give the file of prompts (--input)")
        _check(bool(str(self.output).strip()), "output", "give the JSONL to write (--output)")
        _check(
            bool(self.model) != bool(self.endpoint),
            "model",
            "give either a local model (--model) or an endpoint (--endpoint), not both",
        )
        _check(
            not self.endpoint or bool(self.endpoint_model),
            "endpoint_model",
            "name the model the endpoint serves (--endpoint-model)",
        )
        _check(self.quant in QUANTS, "quant", f"must be one of {', '.join(QUANTS)}")
        _check(
            self.endpoint == "" or self.quant == "none",
            "quant",
            "quantization applies to a local model only",
        )
        _check(1 <= self.n <= 100, "n", f"must be from 1 to 100; got {self.n!r}")
        _check(1 <= self.count <= 1_000_000, "count", f"must be at least 1; got {self.count!r}")
        _check(
            0 <= self.temperature < math.inf,
            "temperature",
            f"must be a finite number, 0 or more; got {self.temperature!r}",
        )
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1]; got {self.top_p!r}")
        _check(self.top_k >= 0, "top_k", f"must be 0 or more; got {self.top_k!r}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        _check(1 <= self.batch_size <= 1024, "batch_size", "must be from 1 to 1024")
        _check(
            isinstance(self.seed, int) and 0 <= self.seed < 2**63,
            "seed",
            f"must be a whole number from 0 to 2**63-1; got {self.seed!r}",
        )
        # Two greedy answers to one prompt are the same answer: no preference in that.
        _check(
            self.mode != "pairs" or self.temperature > 0,
            "temperature",
            "pairs needs two different answers: use a temperature above 0",
        )
        _check(
            not self.judge_url or bool(self.judge_model),
            "judge_model",
            "name the judge's model (--judge-model)",
        )

    def settings(self) -> dict:
        """The sampling settings, as each row's meta records them."""
        keys = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
        return {k: v for k, v in asdict(self).items() if k in keys}

    def source(self) -> dict:
        """Which model made the rows (the key and judge key left out: never written)."""
        if self.endpoint:
            return {"endpoint": self.endpoint, "model": self.endpoint_model}
        out = {"model": self.model, "quant": self.quant}
        if self.adapter:
            out["adapter"] = self.adapter
        return out
