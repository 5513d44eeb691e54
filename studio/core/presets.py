"""Presets sized to the data and the model: one place that picks steps, learning rate and rank.

A fixed preset cannot suit both a 284-conversation demo and 50,000 support tickets: 30 steps
at 3e-4 teaches a 2M-parameter model nothing, and ten epochs of a big dataset take days.
So a preset here is a rule. From the data's size and token counts (`DataStats`) and the
model's size (`ModelStats`) it computes the settings (`plan`):

- sequence length: the smallest of 256, 512, ... that holds 95% of the examples whole;
- steps: enough optimizer steps for the model to pick up the format and its end-of-turn
  token (a small dataset is repeated for several epochs; a large one is read once);
- learning rate: smaller for larger models (LoRA on 7B is usually trained at 2e-4; a tiny
  model needs about 1e-3 to move in a few dozen steps);
- rank: the preset's rank, doubled for very large datasets, capped for tiny models.

The wizard, the demo project and `studio train --demo` all call `plan` (see `demo_settings`),
so they cannot drift apart. Measuring the data is cheap: the `tokenizers` library reads the
model's tokenizer.json (transformers is not imported) and at most SAMPLE records are counted.
No Qt here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config import RunConfig
from studio.core.data.records import Record
from studio.core.errors import ConfigError

SAMPLE = 2000
"""Records tokenized to measure a dataset; the totals are scaled up from them."""

SEQ_LENS = (256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class DataStats:
    """What the plan needs to know about the training data."""

    examples: int
    """Usable records (conversations or texts)."""
    lengths: tuple[int, ...]
    """Token lengths of the measured records (all of them, or a spread-out sample)."""

    @property
    def tokens(self) -> int:
        """Estimated tokens of the whole dataset as rendered for training."""
        if not self.lengths:
            return 0
        return round(sum(self.lengths) * self.examples / len(self.lengths))

    def percentile(self, q: float) -> int:
        s = sorted(self.lengths)
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else 0


@dataclass(frozen=True)
class ModelStats:
    params: int
    """Parameter count (from the safetensors headers or the config)."""
    context: int = 0
    """The model's context length (0: not known)."""
    hidden_size: int = 0


TYPICAL = (
    DataStats(1000, (300,) * 100),
    ModelStats(1_000_000_000, 4096, 2048),
)
"""What a preset assumes when the data or the model has not been measured (yet)."""


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    """What it does, in plain words."""
    rank: int
    alpha: int
    min_steps: int
    """At least this many optimizer steps: small datasets are repeated to get there."""
    epochs: int
    """Passes over the data when those already give more than min_steps."""
    max_epochs: int
    """Never more passes than this, however small the data."""
    max_steps: int = 0
    """A fixed number of steps instead (0: from the rules above)."""
    lr_scale: float = 1.0
    max_seq_len: int = 2048


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "Quick test",
            "30 steps at a small rank: checks that the data, the template and the model work "
            "together in a minute or two before you spend real time. On small data the model "
            "starts to answer in your format; it learns little of the content.",
            rank=8,
            # alpha 32 at rank 8: with Adam a LoRA update grows with alpha, not with the rank,
            # so this moves as fast as Balanced in its few steps.
            alpha=32,
            min_steps=30,
            epochs=1,
            max_epochs=1,
            max_steps=30,
            max_seq_len=1024,
        ),
        Preset(
            "Balanced",
            "Sized to your data and model: one pass over a large dataset, several passes over "
            "a small one (at least 60 steps), so the model learns your format and ends its "
            "answers. A good first real run.",
            rank=16,
            alpha=32,
            min_steps=60,
            epochs=1,
            max_epochs=8,
        ),
        Preset(
            "Thorough",
            "Three passes or more (at least 200 steps), a higher rank and a gentler learning "
            "rate. Learns the most; takes several times longer than Balanced.",
            rank=32,
            alpha=64,
            min_steps=200,
            epochs=3,
            max_epochs=16,
            # Twice the alpha of Balanced makes each update twice as large: halve the rate.
            lr_scale=0.5,
            max_seq_len=4096,
        ),
    )
}
DEFAULT_PRESET = "Balanced"


# --- the rules -----------------------------------------------------------------------------


def learning_rate(params: int) -> float:
    """LoRA's usual 2e-4 at 7B, higher for smaller models (to the 1/4 power), in [1e-4, 1e-3]."""
    lr = 2e-4 * (7e9 / max(1, params)) ** 0.25
    return float(f"{min(1e-3, max(1e-4, lr)):.2g}")


def seq_len_for(data: DataStats, model: ModelStats, limit: int) -> int:
    """The smallest usual length holding 95% of the examples, within the model's context."""
    need = data.percentile(0.95)
    cap = min(limit, model.context) if model.context else limit
    fits = [n for n in SEQ_LENS if n <= cap] or [min(SEQ_LENS)]
    return next((n for n in fits if n >= need), fits[-1])


def val_split_for(examples: int) -> float:
    """Hold out 10% (at most 200 examples) to measure on; nothing from tiny datasets."""
    if examples < 50:
        return 0.0
    return float(f"{min(0.1, 200 / examples):.2g}")


def rows_for(data: DataStats, seq_len: int, train_share: float) -> int:
    """How many packed rows of seq_len tokens the training part fills (as pack_rows would)."""
    from studio.core.data.packing import pack_rows

    lengths = [min(n, seq_len) for n in data.lengths]
    rows = len(pack_rows(lengths, seq_len)) if lengths else 1
    return max(1, math.ceil(rows * data.examples / max(1, len(lengths)) * train_share))


def plan(preset: Preset, data: DataStats, model: ModelStats) -> dict[str, Any]:
    """The settings of `preset` for this data and model, as flat `section.field` keys."""
    seq_len = seq_len_for(data, model, preset.max_seq_len)
    batch = 4 if seq_len <= 1024 else 2 if seq_len <= 2048 else 1
    val_split = val_split_for(data.examples)
    rows = rows_for(data, seq_len, 1 - val_split)
    micro = math.ceil(rows / batch)
    # Accumulate on large datasets only: small ones need every optimizer step they can get.
    accum = 1 if micro < 500 else 2 if batch > 1 else 4
    per_epoch = math.ceil(micro / accum)
    if preset.max_steps:
        epochs, steps, total = 1.0, preset.max_steps, preset.max_steps
    else:
        wanted = max(preset.epochs, math.ceil(preset.min_steps / per_epoch))
        epochs, steps = float(min(preset.max_epochs, wanted)), 0
        total = math.ceil(epochs * micro / accum)
    rank, alpha = preset.rank, preset.alpha
    if data.tokens > 20_000_000:  # much to learn: more room in the adapter
        rank, alpha = rank * 2, alpha * 2
    if model.hidden_size and rank > model.hidden_size // 8:  # a tiny model's layers
        scale = max(4, model.hidden_size // 8) / rank
        rank, alpha = max(4, model.hidden_size // 8), max(4, round(alpha * scale))
    return {
        "train.epochs": epochs,
        "train.max_steps": steps,
        "train.lr": float(f"{learning_rate(model.params) * preset.lr_scale:.2g}"),
        "train.seq_len": seq_len,
        "train.batch_size": batch,
        "train.grad_accum": accum,
        # About six evaluations over the run: enough points to see the curve bend.
        "train.eval_every": max(1, round(total / 6)) if val_split else 0,
        "train.save_every": 0,  # the trainer's rule: about ten checkpoints over the run
        "data.val_split": val_split,
        "lora.r": rank,
        "lora.lora_alpha": alpha,
    }


PLANNED_KEYS = tuple(plan(PRESETS[DEFAULT_PRESET], *TYPICAL))
"""Every key a preset sets, so switching presets leaves nothing of the previous one."""


def apply_preset(
    cfg: RunConfig,
    name: str,
    data: DataStats | None = None,
    model: ModelStats | None = None,
) -> RunConfig:
    """A copy of cfg with the preset's settings for this data and model (TYPICAL if unknown)."""
    if name not in PRESETS:
        raise ConfigError(
            f"preset: must be one of {', '.join(PRESETS)}; got {name!r}", field="preset"
        )
    settings = plan(PRESETS[name], data or TYPICAL[0], model or TYPICAL[1])
    return with_settings(cfg, settings)


def with_settings(cfg: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """cfg with flat `section.field` settings replaced (validated by the dataclasses)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    if cfg.data.eval_path:  # a validation file of its own: the split does not apply
        sections.get("data", {}).pop("val_split", None)
    return dataclasses.replace(
        cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items()}
    )


# --- measuring -----------------------------------------------------------------------------


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _tokenizer_json(model_dir: Path | None):
    """The model's fast tokenizer read by the `tokenizers` library, or None."""
    if model_dir is None or not (model_dir / "tokenizer.json").is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception:  # an unusual tokenizer file: fall back to counting characters
        return None


def measure_data(records: list[Record], model_path: str = "") -> DataStats:
    """Token lengths of (a sample of) records with the model's tokenizer.

    Conversations are counted as ChatML renders them (each message's header and end-of-turn
    marker around its content): close to any chat template, and exact for the demo's. Without
    a tokenizer.json, four characters count as a token.
    """
    sample = _spread(list(records), SAMPLE)
    tok = _tokenizer_json(_model_dir(model_path))
    overhead: dict[str, int] = {}

    def count(texts: list[str]) -> list[int]:
        if tok is None:
            return [max(1, len(t) // 4) for t in texts]
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    def wrap(role: str) -> int:
        if role not in overhead:
            overhead[role] = sum(count([f"<|im_start|>{role}\n", "<|im_end|>\n"]))
        return overhead[role]

    pieces, owners, extra = [], [], [0] * len(sample)
    for i, r in enumerate(sample):
        if r.is_text:
            pieces.append(r.text or "")
            owners.append(i)
            extra[i] = 1  # end of text
            continue
        for m in r.messages or []:
            pieces.append(m["content"])
            owners.append(i)
            extra[i] += wrap(m["role"])
    lengths = list(extra)
    for i, n in zip(owners, count(pieces), strict=True):
        lengths[i] += n
    return DataStats(len(records), tuple(lengths))


def _model_dir(path: str) -> Path | None:
    if not path:
        return None
    from studio.core.errors import ModelError
    from studio.core.model_info import resolve_model_dir

    try:
        return resolve_model_dir(path)
    except ModelError:
        return None


def measure_model(path: str) -> ModelStats:
    """Parameter count, context and width from the model's files (no weights are loaded)."""
    import json

    from studio.core.model_info import _count_safetensors

    folder = _model_dir(path)
    if folder is None:
        return TYPICAL[1]
    try:
        conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        conf = {}
    text = conf.get("text_config") or conf
    try:
        params = _count_safetensors(folder)[0]
    except (OSError, ValueError, KeyError):
        params = 0
    return ModelStats(
        params=params or TYPICAL[1].params,
        context=int(text.get("max_position_embeddings") or text.get("n_positions") or 0),
        hidden_size=int(text.get("hidden_size") or text.get("n_embd") or 0),
    )


def model_stats(info) -> ModelStats:
    """ModelStats from a model_info.ModelInfo the app has read already."""
    return ModelStats(info.num_params, info.context_length, info.hidden_size)


def measure(cfg: RunConfig, records: list[Record] | None = None) -> tuple[DataStats, ModelStats]:
    """Measure cfg's training data (or `records` already read from it) and its model: what
    `apply_preset` and `plan` take."""
    if records is None:
        from studio.core.data.formats import load_dataset

        records = load_dataset(cfg.data.path, cfg.data.format, cfg.data.columns).records
    return measure_data(records, cfg.model.path), measure_model(cfg.model.path)


def demo_settings(name: str = DEFAULT_PRESET) -> dict[str, Any]:
    """The preset's settings for the bundled demo: what `studio train --demo` and the demo
    project in the app both start from."""
    from studio.core.paths import demo_dir

    demo = demo_dir()
    cfg = RunConfig()
    cfg.data.path, cfg.model.path = str(demo / "data.jsonl"), str(demo / "model")
    return plan(PRESETS[name], *measure(cfg))
