"""The Python API: `from studio import LoraConfig, Trainer`.

result = Trainer(model_path="org/model", config=LoraConfig(r=16)).train(data_path="data.json", epochs=3)
result.adapter_path, result.metrics
Trainer(...).export(to="gguf", quant="q8_0") or studio.export(run_dir, to="hf")
studio.evaluate([run_dir], data="held_out.jsonl").model(name)["loss"]
studio.generate_data("answer", input="prompts.jsonl", output="data.jsonl", model="org/model")
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.config import (
    DataConfig,
    DistillConfig,
    LoraConfig,
    ModelConfig,
    PreferenceConfig,
    RunConfig,
    TrainConfig,
)
from studio.core.errors import ConfigError, TrainingFailed


@dataclass
class TrainResult:
    run_dir: Path
    adapter_path: Path | None
    status: str
    """completed, stopped or failed."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """final_loss, eval_loss, steps, and the loss of every step (`losses`)."""


class Trainer:
    """Fine-tune `model_path` with LoRA `config`. Extra keyword arguments set ModelConfig,
    TrainConfig or DataConfig fields (e.g. quant="4bit", seq_len=1024, val_split=0.1), and
    distillation's as the CLI names them: mode="distill", teacher="org/big-model",
    teacher_quant="4bit", distill_alpha=0.5, distill_temperature=2.0, distill_loss="jsd";
    and preference tuning's: mode="dpo" (or "orpo", "simpo") on a file of pairs, beta=0.1,
    simpo_gamma=0.5. A preference run's metrics add the last step's rewards/chosen,
    rewards/rejected, rewards/margins and rewards/accuracies."""

    def __init__(
        self,
        model_path: str,
        config: LoraConfig | None = None,
        output: str | None = None,
        **options,
    ):
        self.model_path = str(model_path)
        self.lora = config or LoraConfig()
        self.output = output
        self.options = options
        self.last_output: str | None = None
        """The run folder of the last train() call."""

    def _config(
        self, data_path: str, overrides: dict[str, Any], previous: str | None = None
    ) -> RunConfig:
        opts = {**self.options, **overrides}
        sections = {}
        for cls, name in ((ModelConfig, "model"), (TrainConfig, "train"), (DataConfig, "data")):
            names = {f.name for f in dataclasses.fields(cls)}
            sections[name] = {k: opts.pop(k) for k in list(opts) if k in names and k != "path"}
        # DistillConfig's fields: teacher and teacher_quant as they are, the others distill_*.
        names = {(f.name if f.name.startswith("teacher") else f"distill_{f.name}"): f.name
                 for f in dataclasses.fields(DistillConfig)}  # fmt: skip
        distill = {names[k]: opts.pop(k) for k in list(opts) if k in names}
        # Preference tuning (mode="dpo", "orpo" or "simpo"): beta= and simpo_gamma=.
        preference = {k: opts.pop(k) for k in ("beta", "simpo_gamma") if k in opts}
        if opts:
            raise TypeError(f"unknown training option(s): {', '.join(sorted(opts))}")
        output = (
            self.output or previous or str(Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
        )
        return RunConfig(
            model=ModelConfig(path=self.model_path, **sections["model"]),
            lora=self.lora,
            data=DataConfig(path=str(data_path), **sections["data"]),
            train=TrainConfig(**sections["train"]),
            distill=DistillConfig(**distill),
            preference=PreferenceConfig(**preference),
            output=str(Path(output).resolve()),
        )

    def train(
        self, data_path: str, *, resume: bool = False, raise_on_failure: bool = True, **overrides
    ) -> TrainResult:
        from studio.core.train import run_training

        if resume and not (self.output or self.last_output):
            raise ConfigError(
                "output: resuming needs the run folder; pass output= (the folder of the run "
                "to continue)",
                field="output",
            )
        cfg = self._config(data_path, overrides, self.last_output if resume else None)
        self.last_output = cfg.output  # train(resume=True) continues this run
        losses: list[float] = []
        last_step: dict[str, float] = {}  # the last step's own figures (a preference run's rewards)

        def collect(event):
            if event.type == "step":
                losses.append(event.loss)
                last_step.update(event.metrics)

        if cfg.train.processes > 1:  # torchrun ranks in child processes; rank 0 writes the run
            from studio.core.events import read_events
            from studio.core.launch import launch

            launch(cfg, resume=resume, quiet=True)
            events = read_events(Path(cfg.output) / "events.jsonl")
            last = events[-1] if events else None
            by_step = {e.step: e.loss for e in events if e.type == "step"}
            losses = [by_step[s] for s in sorted(by_step)]
            last_step.update(next((e.metrics for e in reversed(events) if e.type == "step"), {}))
        else:
            last = run_training(cfg, resume=resume, on_event=collect)
        metrics: dict[str, Any] = {"losses": losses, "steps": getattr(last, "step", 0)}
        metrics.update({k: v for k, v in last_step.items() if k.startswith("rewards/")})
        if last is None or last.type == "error":
            message = getattr(last, "message", "training produced no events")
            if raise_on_failure:
                raise TrainingFailed(message)
            return TrainResult(Path(cfg.output), None, "failed", dict(metrics, error=message))
        metrics.update(final_loss=last.final_loss, eval_loss=last.eval_loss)
        return TrainResult(Path(cfg.output), Path(last.adapter), last.status, metrics)

    def export(self, *, to: str = "gguf", quant: str = "f16", **options) -> ExportResult:
        """Export the last trained run (see `studio.export`)."""
        if not self.last_output:
            raise ConfigError("export: train() first; there is no run to export", field="export")
        return export(self.last_output, to=to, quant=quant, **options)


@dataclass
class ExportResult:
    output: Path
    """The folder written (GGUF, Modelfile, safetensors... and export.json)."""
    report: dict[str, Any]
    """export.json: files with sizes and checksums, verification figures, commands."""


def export(
    adapter: str | Path,
    *,
    to: str = "gguf",
    quant: str = "f16",
    output: str | Path = "",
    on_event=None,
    **options,
) -> ExportResult:
    """Export a run: `studio.export("runs/my-run", to="gguf", quant="q8_0")`.

    to: hf, gguf, ollama, lora-gguf or onnx. Other keyword arguments set ExportOptions fields
    (model=, dtype=, overwrite=, verify=, name=). Raises ExportError with one clear sentence
    for bad input, TrainingFailed-like RuntimeError for a failure while writing.
    """
    import json

    from studio.core.export import ExportError, ExportOptions, run_export

    opts = ExportOptions(
        adapter=str(adapter), target=to, quant=quant, output=str(output or ""), **options
    )
    last = run_export(opts, on_event=on_event)
    if last is None or last.type == "error":
        message = getattr(last, "message", "the export produced no result")
        if getattr(last, "kind", "") == "input":
            raise ExportError(message)
        raise RuntimeError(message)
    if last.status == "stopped":
        raise ExportError("the export was cancelled; nothing was written")
    folder = Path(last.adapter)
    return ExportResult(folder, json.loads((folder / "export.json").read_text(encoding="utf-8")))


@dataclass
class EvalResult:
    output: Path
    """RUN/eval/<name>/: report.json and report.html."""
    report: dict[str, Any]
    """report.json: models (loss, perplexity, exact_match, contains, rouge_l, judge), samples,
    data, generation settings, judge and lm_eval sections."""

    def model(self, key: str = "base") -> dict[str, Any]:
        """One model's row: "base" or a run's name."""
        return next(m for m in self.report["models"] if m["key"] == key)


def evaluate(
    runs: str | Path | list[str | Path], *, data: str | Path = "", on_event=None, cancel=None,
    **options,
) -> EvalResult:  # fmt: skip
    """Evaluate runs against their base: `studio.evaluate(["runs/a", "runs/b"], data="held.jsonl")`.

    Other keyword arguments set EvalOptions fields (name=, samples=, max_new_tokens=, base=,
    judge_url=, judge_model=, judge_key=, lm_eval_tasks=, device=, overwrite=). Raises a
    StudioError with one sentence for bad input, RuntimeError for a failure while evaluating.
    """
    from studio.core.errors import StudioError
    from studio.core.evaluate import EvalOptions, read_report, run_evaluation

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    opts = EvalOptions(runs=[str(p) for p in paths], data=str(data or ""), **options)
    last = run_evaluation(opts, on_event=on_event, cancel=cancel)
    if last is None or last.type == "error":
        message = getattr(last, "message", "the evaluation produced no result")
        if getattr(last, "kind", "") == "input":
            raise StudioError(message)
        raise RuntimeError(message)
    if last.status == "stopped":
        raise StudioError("the evaluation was cancelled; no report was written")
    return EvalResult(Path(last.adapter), read_report(last.adapter))


@dataclass
class GenerateResult:
    output: Path
    """The JSONL written (or continued)."""
    rows: int
    """Rows in it now."""
    status: str
    """completed, or stopped when cancelled (the rows written are kept)."""


def generate_data(
    mode: str, *, input: str | Path, output: str | Path, on_event=None, cancel=None, **options
) -> GenerateResult:
    """Make training data: `studio.generate_data("answer", input="prompts.jsonl",
    output="answers.jsonl", model="org/model")`.

    mode: answer, paraphrase, self-instruct or pairs. Other keyword arguments set
    GenerateOptions fields (model=, endpoint=, endpoint_model=, api_key=, quant=, n=, count=,
    temperature=, top_p=, max_new_tokens=, seed=, batch_size=, judge_url=, overwrite=...).
    An existing output is continued. Raises a StudioError with one sentence for bad input,
    RuntimeError for a failure while generating (the rows written stay in the file).
    """
    from studio.core.data.generate import GenerateOptions, run_generation
    from studio.core.errors import StudioError

    opts = GenerateOptions(mode=mode, input=str(input), output=str(output), **options)
    last = run_generation(opts, on_event=on_event, cancel=cancel)
    if last is None or last.type == "error":
        message = getattr(last, "message", "the generation produced no result")
        if getattr(last, "kind", "") == "input":
            raise StudioError(message)
        raise RuntimeError(message)
    return GenerateResult(Path(last.adapter), last.step, last.status)
