"""Typed configuration: one dataclass per concern, validated on construction.

CLI flags, the GUI forms and `run.yaml` are all views of `RunConfig`. Every field has a
working default and a docstring-style comment under it. Validation raises `ConfigError`
naming the field (as the user would spell it in run.yaml, e.g. `lora.r`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from studio.core.errors import ConfigError

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text", "pairs")
TEMPLATES = ("auto", "chatml", "alpaca", "llama2")

# run.yaml field -> `studio train` flag (the flags of issue 3). Fields without a flag travel
# in `--config run.yaml`.
FLAGS: dict[str, str] = {
    "model.path": "--model",
    "data.path": "--data",
    "output": "--output",
    "data.format": "--format",
    "train.epochs": "--epochs",
    "train.max_steps": "--max-steps",
    "train.batch_size": "--batch-size",
    "train.grad_accum": "--grad-accum",
    "train.lr": "--lr",
    "train.seq_len": "--seq-len",
    "lora.r": "--lora-rank",
    "lora.lora_alpha": "--lora-alpha",
    "lora.lora_dropout": "--lora-dropout",
    "lora.target_modules": "--target-modules",
    "model.quant": "--quant",
    "train.packing": "--packing",
    "data.val_split": "--val-split",
    "data.eval_path": "--eval-data",
    "train.eval_every": "--eval-every",
    "train.save_every": "--save-every",
    "train.seed": "--seed",
    "train.gradient_checkpointing": "--gradient-checkpointing",
    "model.device": "--device",
    "model.dtype": "--dtype",
    "model.double_quant": "--double-quant",
    "model.trust_remote_code": "--trust-remote-code",
    "model.allow_pickle": "--allow-pickle",
    "lora.use_rslora": "--rslora",
    "lora.use_dora": "--dora",
    "data.template": "--template",
    "data.train_on": "--train-on",
    "data.overlong": "--overlong",
    "train.weight_decay": "--weight-decay",
    "train.scheduler": "--scheduler",
    "train.warmup_ratio": "--warmup-ratio",
    "train.max_grad_norm": "--max-grad-norm",
    "train.keep_checkpoints": "--keep-checkpoints",
    "train.optimizer": "--optimizer",
    "train.loraplus_ratio": "--loraplus-ratio",
    "train.param_groups": "--param-groups",
    "train.sensitivity_tiers": "--sensitivity-tiers",
    "train.sensitivity_spread": "--sensitivity-spread",
    "train.sensitivity_every": "--sensitivity-every",
    "train.processes": "--nproc",
    "train.grad_compression": "--grad-compression",
    "train.mode": "--mode",
    "train.tensorboard": "--tensorboard",
    "preference.beta": "--beta",
    "preference.simpo_gamma": "--simpo-gamma",
    "distill.teacher": "--teacher",
    "distill.alpha": "--distill-alpha",
    "distill.temperature": "--distill-temperature",
    "distill.loss": "--distill-loss",
    "distill.teacher_quant": "--teacher-quant",
}

OPTIMIZERS = ("adamw", "adamw_8bit")
PARAM_GROUPS = ("none", "sensitivity")
COMPRESSIONS = ("none", "fp16", "bf16", "int8", "int4")
MODES = ("sft", "dpo", "orpo", "simpo", "distill")
PAIR_MODES = ("dpo", "orpo", "simpo")
"""Modes that train on preference pairs ({"prompt", "chosen", "rejected"} records)."""
DISTILL_LOSSES = ("forward_kl", "reverse_kl", "jsd")

# The settings that take one of a few values: the CLI's choices and the app's combo boxes.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.quant": ("none", "8bit", "4bit"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.device": ("auto", "cpu", "cuda", "mps"),
    "data.format": FORMATS,
    "data.template": TEMPLATES,
    "data.train_on": ("assistant", "all"),
    "data.overlong": ("truncate", "drop"),
    "train.scheduler": ("cosine", "linear", "constant"),
    "train.mixed_precision": ("auto", "off"),
    "train.optimizer": OPTIMIZERS,
    "train.param_groups": PARAM_GROUPS,
    "train.grad_compression": COMPRESSIONS,
    "train.mode": MODES,
    "distill.loss": DISTILL_LOSSES,
    "distill.teacher_quant": ("none", "8bit", "4bit"),
}


def _check(cond: bool, field_name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {message}", field=field_name)


def _choice(value: Any, allowed: tuple, field_name: str) -> None:
    _check(
        value in allowed,
        field_name,
        f"must be one of {', '.join(map(str, allowed))}; got {value!r}",
    )


@dataclass
class ModelConfig:
    path: str = ""
    """Local Hugging Face folder or hub id (e.g. `Qwen/Qwen2.5-0.5B-Instruct`)."""
    dtype: str = "auto"
    """auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    device: str = "auto"
    """auto picks CUDA, then Apple MPS, then CPU."""
    quant: str = "none"
    """none, 8bit or 4bit (QLoRA through bitsandbytes, NF4 for 4bit)."""
    double_quant: bool = True
    """Quantize the 4-bit quantization constants too (saves ~0.4 bit a parameter)."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the model folder. Off unless you trust its source."""
    allow_pickle: bool = False
    """Load pickle-based `.bin` weights (can run arbitrary code). Off by default."""

    def __post_init__(self):
        _choice(self.dtype, ("auto", "float32", "bfloat16", "float16"), "model.dtype")
        _choice(self.device, ("auto", "cpu", "cuda", "mps"), "model.device")
        _choice(self.quant, ("none", "8bit", "4bit"), "model.quant")


@dataclass
class LoraConfig:
    r: int = 16
    """Rank of the low-rank update; higher learns more and costs more memory."""
    lora_alpha: int = 32
    """Scale of the update (effective scale alpha/r, or alpha/sqrt(r) with rsLoRA)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: str | list[str] = "all-linear"
    """`all-linear` or a list of module names such as q_proj, v_proj."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""

    def __post_init__(self):
        _check(
            isinstance(self.r, int) and self.r > 0,
            "lora.r",
            f"the LoRA rank must be a positive whole number; got {self.r!r}",
        )
        _check(self.lora_alpha > 0, "lora.lora_alpha", f"must be positive; got {self.lora_alpha!r}")
        _check(
            0 <= self.lora_dropout < 1,
            "lora.lora_dropout",
            f"must be in [0, 1); got {self.lora_dropout!r}",
        )
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        _check(
            bool(self.target_modules),
            "lora.target_modules",
            "name at least one module, or all-linear",
        )


@dataclass
class DataConfig:
    path: str = ""
    """Training data file: JSON, JSONL, CSV/TSV, Parquet or TXT."""
    format: str = "auto"
    """auto, alpaca, sharegpt, messages (OpenAI) or text (continued pre-training)."""
    columns: dict[str, str] | None = None
    """For CSV/Parquet: which column is instruction, input, output, system (guessed if unset)."""
    eval_path: str = ""
    """A separate validation file; when set, val_split is ignored."""
    val_split: float = 0.0
    """Fraction of records held out for validation (seeded)."""
    template: str = "auto"
    """auto uses the tokenizer's own chat template; or chatml, alpaca, llama2."""
    train_on: str = "assistant"
    """assistant: loss only on assistant turns. all: loss on every token."""
    overlong: str = "truncate"
    """What to do with examples longer than seq_len: truncate or drop (counted either way)."""

    def __post_init__(self):
        _choice(self.format, FORMATS, "data.format")
        _choice(self.template, TEMPLATES, "data.template")
        _choice(self.train_on, ("assistant", "all"), "data.train_on")
        _choice(self.overlong, ("truncate", "drop"), "data.overlong")
        _check(
            0 <= self.val_split < 1, "data.val_split", f"must be in [0, 1); got {self.val_split!r}"
        )


@dataclass
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training data (fractions allowed)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: use epochs)."""
    batch_size: int = 4
    """Rows per micro-batch (with packing, each row holds up to seq_len tokens)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 2e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    scheduler: str = "cosine"
    """cosine, linear or constant (after warmup)."""
    warmup_ratio: float = 0.03
    """Fraction of steps spent warming the learning rate up from 0."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0 disables clipping)."""
    seq_len: int = 512
    """Longest sequence, in tokens."""
    packing: bool = True
    """Pack several examples into each row (padding-free; attention stays inside each example)."""
    eval_every: int = 0
    """Evaluate every N steps (0: only at the end, when there is validation data)."""
    save_every: int = 0
    """Write a checkpoint every N steps (0: automatic, about ten a run and at least one every
    30 minutes, so a crash or a kill never costs the whole run)."""
    keep_checkpoints: int = 3
    """Keep the last K checkpoints."""
    seed: int = 42
    """Seed for data order, LoRA init and dropout."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    mixed_precision: str = "auto"
    """auto (bf16/fp16 autocast on GPU, off on CPU), or off."""
    optimizer: str = "adamw"
    """adamw, or adamw_8bit (bitsandbytes: optimizer state in 8 bits, about 4x less memory)."""
    loraplus_ratio: float = 0.0
    """LoRA+: train the B matrices at this many times the learning rate (16 is usual; 0: off)."""
    param_groups: str = "none"
    """none, or sensitivity: modules re-ranked by AdaLoRA's sensitivity into learning-rate tiers."""
    sensitivity_tiers: int = 3
    """With sensitivity groups: how many tiers (odd; the middle one trains at the base rate)."""
    sensitivity_spread: float = 2.0
    """With sensitivity groups: lr ratio between neighbouring tiers (3 tiers, 2: 2x, 1x, 0.5x)."""
    sensitivity_every: int = 20
    """With sensitivity groups: re-rank the modules every N steps."""
    processes: int = 1
    """Training processes on this machine (torchrun): one per GPU, or CPU processes."""
    grad_compression: str = "none"
    """With several processes: gradients sent as none (fp32), fp16, bf16, int8 or int4."""
    mode: str = "sft"
    """sft: teach it answers. dpo, orpo or simpo: teach it preferences from chosen/rejected
    pairs. distill: make it imitate a bigger teacher model (distill.teacher)."""
    tensorboard: bool = False
    """Also write the loss, learning rate and evaluation figures to RUN/tensorboard/ for
    TensorBoard (needs `pip install tensorboard`); events.jsonl is written either way."""

    def __post_init__(self):
        _check(self.epochs > 0, "train.epochs", f"must be positive; got {self.epochs!r}")
        _check(self.max_steps >= 0, "train.max_steps", f"must be 0 or more; got {self.max_steps!r}")
        _check(
            self.batch_size >= 1, "train.batch_size", f"must be at least 1; got {self.batch_size!r}"
        )
        _check(
            self.grad_accum >= 1, "train.grad_accum", f"must be at least 1; got {self.grad_accum!r}"
        )
        _check(self.lr > 0, "train.lr", f"the learning rate must be positive; got {self.lr!r}")
        _check(
            self.weight_decay >= 0,
            "train.weight_decay",
            f"must be 0 or more; got {self.weight_decay!r}",
        )
        _choice(self.scheduler, ("cosine", "linear", "constant"), "train.scheduler")
        _check(
            0 <= self.warmup_ratio < 1,
            "train.warmup_ratio",
            f"must be in [0, 1); got {self.warmup_ratio!r}",
        )
        _check(
            self.max_grad_norm >= 0,
            "train.max_grad_norm",
            f"must be 0 or more; got {self.max_grad_norm!r}",
        )
        _check(
            self.seq_len >= 8, "train.seq_len", f"must be at least 8 tokens; got {self.seq_len!r}"
        )
        _check(
            self.eval_every >= 0, "train.eval_every", f"must be 0 or more; got {self.eval_every!r}"
        )
        _check(
            self.save_every >= 0, "train.save_every", f"must be 0 or more; got {self.save_every!r}"
        )
        _check(
            self.keep_checkpoints >= 1,
            "train.keep_checkpoints",
            f"must be at least 1; got {self.keep_checkpoints!r}",
        )
        _choice(self.mixed_precision, ("auto", "off"), "train.mixed_precision")
        _choice(self.optimizer, OPTIMIZERS, "train.optimizer")
        _check(
            self.loraplus_ratio == 0 or self.loraplus_ratio >= 1,
            "train.loraplus_ratio",
            f"must be 0 (off) or at least 1 (16 is usual); got {self.loraplus_ratio!r}",
        )
        _choice(self.param_groups, PARAM_GROUPS, "train.param_groups")
        _check(
            self.sensitivity_tiers in (1, 3, 5, 7),
            "train.sensitivity_tiers",
            f"must be 1, 3, 5 or 7 (odd, so one tier trains at the base rate); got {self.sensitivity_tiers!r}",
        )
        _check(
            self.sensitivity_spread >= 1,
            "train.sensitivity_spread",
            f"must be at least 1; got {self.sensitivity_spread!r}",
        )
        _check(
            self.sensitivity_every >= 1,
            "train.sensitivity_every",
            f"must be at least 1; got {self.sensitivity_every!r}",
        )
        _check(
            1 <= self.processes <= 64,
            "train.processes",
            f"must be between 1 and 64; got {self.processes!r}",
        )
        _choice(self.grad_compression, COMPRESSIONS, "train.grad_compression")
        _choice(self.mode, MODES, "train.mode")


BETA_DEFAULTS = {"dpo": 0.1, "orpo": 0.1, "simpo": 2.0}


@dataclass
class PreferenceConfig:
    """Preference tuning (train.mode dpo, orpo or simpo)."""

    beta: float = 0.0
    """DPO's beta (how far from the base it may move), ORPO's lambda (weight of the odds-ratio
    term), SimPO's beta (reward scale). 0: the mode's usual value (0.1, 0.1, 2.0)."""
    simpo_gamma: float = 0.5
    """SimPO: the reward margin the chosen answer should win by."""

    def __post_init__(self):
        _check(
            self.beta >= 0, "preference.beta", f"must be 0 (usual value) or more; got {self.beta!r}"
        )
        _check(
            self.simpo_gamma >= 0,
            "preference.simpo_gamma",
            f"must be 0 or more; got {self.simpo_gamma!r}",
        )

    def beta_for(self, mode: str) -> float:
        return self.beta or BETA_DEFAULTS.get(mode, 0.1)


@dataclass
class DistillConfig:
    """Distillation (train.mode distill): the student imitates the teacher's distribution."""

    teacher: str = ""
    """The teacher model: a local folder or hub id sharing the student's tokenizer."""
    alpha: float = 0.5
    """Weight of the distillation term; 1 - alpha goes to the usual loss on the answers."""
    temperature: float = 2.0
    """Softens both distributions before they are compared (the term is scaled by T^2)."""
    loss: str = "forward_kl"
    """forward_kl KL(teacher||student), reverse_kl KL(student||teacher), or jsd."""
    jsd_beta: float = 0.5
    """With loss jsd: the mixing weight of the generalised Jensen-Shannon divergence."""
    teacher_quant: str = "none"
    """none, 8bit or 4bit: load the teacher quantized to save memory."""
    chunk_tokens: int = 1024
    """Logits are computed this many answer tokens at a time, so memory stays bounded."""
    generate: bool = False
    """Sequence-level distillation: the teacher answers prompts that have no answer first."""
    max_new_tokens: int = 256
    """With generate: the longest answer the teacher writes."""

    def __post_init__(self):
        _check(0 <= self.alpha <= 1, "distill.alpha", f"must be in [0, 1]; got {self.alpha!r}")
        _check(
            self.temperature > 0,
            "distill.temperature",
            f"must be positive; got {self.temperature!r}",
        )
        _choice(self.loss, DISTILL_LOSSES, "distill.loss")
        _check(
            0 < self.jsd_beta < 1, "distill.jsd_beta", f"must be in (0, 1); got {self.jsd_beta!r}"
        )
        _choice(self.teacher_quant, ("none", "8bit", "4bit"), "distill.teacher_quant")
        _check(
            self.chunk_tokens >= 16,
            "distill.chunk_tokens",
            f"must be at least 16; got {self.chunk_tokens!r}",
        )
        _check(
            self.max_new_tokens >= 1,
            "distill.max_new_tokens",
            f"must be at least 1; got {self.max_new_tokens!r}",
        )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    output: str = ""
    """The run folder (run.yaml, events.jsonl, checkpoints/, adapter/)."""

    def __post_init__(self):
        if self.train.mode == "distill":
            _check(
                bool(self.distill.teacher),
                "distill.teacher",
                "train.mode distill needs a teacher model; pass --teacher FOLDER_OR_HUB_ID",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if d is not None and not isinstance(d, dict):
            raise ConfigError(
                "config: must be a mapping with model, lora, data and train sections",
                field="config",
            )
        sections = {
            "model": ModelConfig,
            "lora": LoraConfig,
            "data": DataConfig,
            "train": TrainConfig,
            "preference": PreferenceConfig,
            "distill": DistillConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in (d or {}).items():
            if key in sections:
                kwargs[key] = _build(sections[key], value or {}, key)
            elif key == "output":
                kwargs["output"] = _coerce(value, str, "output")
            else:
                raise ConfigError(
                    f"{key}: unknown section in the config (expected model, lora, data, train, "
                    "preference, distill, output)",
                    field=key,
                )
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        data = read_yaml(p, ConfigError, field="config")
        if not isinstance(data, dict):
            raise ConfigError(
                f"config: {p} must hold a mapping with model, lora, data and train sections",
                field="config",
            )
        return cls.from_dict(data)


MAX_YAML_BYTES = 1024 * 1024
"""Largest run.yaml / project.yaml read (a real one is about 2 KB)."""


def read_yaml(path: Path, error: type = ConfigError, field: str = "config") -> Any:
    """The YAML document in `path`, or `error` saying why it cannot be read.

    Files from anywhere: not UTF-8, nested deeper than the parser's stack, or huge (an alias
    "bomb" is harmless here: nothing below copies values it has not type-checked).
    """

    def fail(why: str):
        return error(f"{field}: {path} {why}", field=field)

    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise fail(f"is larger than {MAX_YAML_BYTES // 1024} KB; it is not a settings file")
        text = path.read_bytes().decode("utf-8-sig")
        return yaml.safe_load(text)
    except OSError as e:
        raise error(f"{field}: cannot read {path}: {e.strerror or e}", field=field) from None
    except UnicodeDecodeError as e:
        raise fail(
            f"is not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        raise fail(f"is not valid YAML: {e}") from None
    except RecursionError:
        raise fail("is nested too deeply to be a settings file") from None


def _build(cls, values: dict[str, Any], section: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: must be a mapping of settings", field=section)
    names = {f.name for f in fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"{section}.{unknown[0]}: unknown setting (known: {', '.join(sorted(names))})",
            field=f"{section}.{unknown[0]}",
        )
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints.get(k), f"{section}.{k}") for k, v in values.items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{section}: {e}", field=section) from None


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """A YAML value as the field's type: YAML reads 2e-4 as a string, 10.0 as a float.

    A value of another type is a ConfigError here, so every loaded field has its declared type.
    """
    if kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        raise ConfigError(f"{name}: must be a number; got {_shown(value)}", field=name)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{name}: must be a whole number; got {_shown(value)}", field=name)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{name}: must be true or false; got {_shown(value)}", field=name)
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a folder named 2024 reads as a number in YAML
        raise ConfigError(f"{name}: must be text; got {_shown(value)}", field=name)
    if kind == str | list[str]:  # lora.target_modules
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return _coerce(value, str, name)
    if kind == dict[str, str] | None:  # data.columns
        if value is None:
            return None
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            return {k: str(v) for k, v in value.items()}
        raise ConfigError(
            f"{name}: must be a mapping of role to column name; got {_shown(value)}", field=name
        )
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def flat_settings(cfg: RunConfig) -> dict[str, Any]:
    """{"train.lr": 0.0002, ..., "output": "..."}: every setting under its dotted name."""
    out: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def replace_field(cfg: RunConfig, dotted: str, value: Any) -> RunConfig:
    """Return a copy of cfg with `section.name` set to value, validated."""
    section, _, name = dotted.partition(".")
    if not name:
        return dataclasses.replace(cfg, **{section: value})
    sub = getattr(cfg, section)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{name: value})})
