"""What each export target writes, stage by stage (see pipeline.export_events)."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.export.merge import Merged
from studio.core.export.options import K_QUANTS, ExportOptions
from studio.core.export.pipeline import ExportError, default_output, expected_bytes, run_stage
from studio.core.infer import AdapterInfo, find_adapter

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class Plan:
    opts: ExportOptions
    info: AdapterInfo
    base: str
    base_dir: Path
    config: dict
    num_params: int
    dtype: str
    output: Path
    need: int
    name: str
    source_name: str
    arch: str = ""
    records: list = field(default_factory=list)
    """The run's conversations (for the system prompt and the check prompts)."""
    notes: list[str] = field(default_factory=list)

    @property
    def describe(self) -> str:
        o = self.opts
        return {
            "hf": f"a merged Hugging Face folder ({self.dtype})",
            "onnx": "ONNX with a KV cache",
            "lora-gguf": f"a LoRA GGUF adapter ({o.quant.upper()})",
            "gguf": f"GGUF {o.quant.upper()}",
            "ollama": f"GGUF {o.quant.upper()} with an Ollama Modelfile",
        }[o.target]


def plan(opts: ExportOptions) -> Plan:
    """Check everything that can be checked before a byte is written."""
    from studio.core.export.merge import merge_dtype
    from studio.core.model_info import resolve_model_dir

    info = find_adapter(opts.adapter)
    base = opts.model or info.base_model
    if not base:
        raise ExportError(
            f"model: {info.folder} does not say which base model it was trained on; "
            "pass --model BASE_FOLDER_OR_HUB_ID"
        )
    base_dir = resolve_model_dir(base, allow_network=True)
    num_params = parameter_count(base_dir)
    import json

    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    arch = ""
    if opts.target in ("gguf", "ollama", "lora-gguf"):
        from studio.core.export.gguf_file import check_supported

        arch = check_supported(config)
    if opts.target == "onnx":
        from studio.core.export.onnx_export import onnx_available

        if not onnx_available():
            raise ExportError(
                'ONNX export needs the onnx extra: pip install "studio[onnx]" (onnx and onnxruntime)'
            )
    if opts.quant in K_QUANTS and opts.target in ("gguf", "ollama"):
        from studio.core.export.verify import llama_cpp_available

        if not llama_cpp_available():
            raise ExportError(
                f"{opts.quant.upper()} is made by llama.cpp's own quantizer, which is not installed: "
                'pip install "studio[gguf]" (it compiles llama.cpp once, a few minutes; needs cmake '
                "and a C++ compiler), or choose q8_0, q5_0 or q4_0, which Studio writes itself"
            )
    dtype = merge_dtype(opts.dtype, config)
    run_name = info.run_dir.name if info.run_dir is not None else info.folder.name
    output = (
        Path(opts.output).expanduser().resolve()
        if opts.output
        else default_output(opts, info.run_dir, info.folder, dtype)
    )
    need = expected_bytes(num_params, opts.target, opts.quant, DTYPE_BYTES[dtype])
    if opts.target == "lora-gguf":
        need = sum(f.stat().st_size for f in info.folder.glob("adapter_model.*")) * 2
    from studio.core.export.pipeline import safe_name
    from studio.core.export.prompts import run_records

    return Plan(
        opts=opts,
        info=info,
        base=str(base),
        base_dir=base_dir,
        config=config,
        num_params=num_params,
        dtype=dtype,
        output=output,
        need=need,
        name=safe_name(opts.name or run_name),
        source_name=str(info.run_dir or info.folder),
        arch=arch,
        records=run_records(info.run_dir) if _uses_records(opts) else [],
    )


def _uses_records(opts: ExportOptions) -> bool:
    """Reading the run's data (seconds for a big file) only for what uses it: the Ollama
    system prompt and the prompts of a check that will run."""
    from studio.core.export.verify import llama_cpp_available

    if opts.target == "ollama":
        return True
    if not opts.verify:
        return False
    return opts.target == "onnx" or (opts.target == "gguf" and llama_cpp_available())


def parameter_count(base_dir: Path) -> int:
    """From the safetensors headers (instant); a model stored otherwise is counted by
    read_model_info, which builds it on the meta device (a second or two of imports)."""
    from studio.core.model_info import _count_safetensors, read_model_info

    count, _ = _count_safetensors(base_dir)
    return count or read_model_info(str(base_dir)).num_params


def _report(plan: Plan) -> dict:
    o = plan.opts
    return {
        "target": o.target,
        "quant": o.quant if o.uses_quant else plan.dtype,
        "source": {
            "adapter": str(plan.info.folder),
            "run": str(plan.info.run_dir) if plan.info.run_dir else "",
            "base_model": plan.base,
            "template": plan.info.template or "auto",
        },
        "parameters": plan.num_params,
        "notes": plan.notes,
    }


def _qlora_note(plan: Plan):
    from studio.core.export.merge import run_quant

    trained = run_quant(plan.info)
    if trained in ("4bit", "8bit"):
        note = (
            f"this adapter was trained against the {trained} base; it is merged into the "
            f"{plan.dtype} weights, so answers can differ slightly from chatting with the {trained} base"
        )
        plan.notes.append(note)
        yield _log(note, "warning")


def _load(plan: Plan, cancel: threading.Event, why: str = ""):
    """The base and adapter merged by peft in memory (any adapter peft can load)."""
    from studio.core.export.merge import load_merged

    yield _log(f"loading {plan.base} in {plan.dtype} and merging the adapter{why}")

    def work(progress, log, cancel):
        progress(0, 2)
        merged = load_merged(
            plan.info,
            plan.base,
            plan.dtype,
            allow_pickle=plan.opts.allow_pickle,
            trust_remote_code=plan.opts.trust_remote_code,
        )
        progress(2, 2)
        return merged

    return (yield from run_stage("merging", work, cancel))


def _source(plan: Plan, cancel: threading.Event):
    """Stream the merge from the files when the adapter is plain LoRA, else merge with peft."""
    from studio.core.export.stream_merge import streamable

    yield from _qlora_note(plan)
    weights = None
    if plan.opts.target in ("hf", "gguf", "ollama"):
        weights = streamable(plan.info.folder, plan.base_dir, plan.dtype)
    if weights is None:
        return (yield from _load(plan, cancel))
    from studio.core.infer import chat_template
    from studio.core.models import load_tokenizer

    tokenizer = load_tokenizer(str(plan.base_dir), plan.opts.trust_remote_code)
    yield _log(
        f"merging the adapter into {plan.base} ({plan.dtype}) tensor by tensor, from its files"
    )
    return Merged(tokenizer, chat_template(tokenizer, plan.info.template), weights)


def _log(message: str, level: str = "info"):
    from studio.core.events import Log

    return Log(message, level=level)


def write(plan: Plan, tmp: Path, cancel: threading.Event):
    target = plan.opts.target
    if target == "lora-gguf":
        return (yield from _write_lora_gguf(plan, tmp, cancel))
    if target == "onnx":
        yield from _qlora_note(plan)
        merged = yield from _load(plan, cancel)
        return (yield from _write_onnx(plan, merged, tmp, cancel))
    source = yield from _source(plan, cancel)
    if target == "hf":
        return (yield from _write_hf(plan, source, tmp, cancel))
    return (yield from _write_gguf(plan, source, tmp, cancel))


def _write_hf(plan: Plan, source: Merged, tmp: Path, cancel):
    from studio.core.export.jinja import jinja_template
    from studio.core.export.merge import end_of_turn_ids, save_hf
    from studio.core.export.stream_merge import copy_config, write_safetensors

    jinja = jinja_template(source.template, source.tokenizer)

    def work(progress, log, cancel):
        if source.model is not None:
            progress(0, 1)
            save_hf(source, tmp, jinja)
            progress(1, 1)
            return
        write_safetensors(source.tensors, tmp, progress=progress, cancel=cancel)
        copy_config(
            plan.base_dir, tmp, plan.dtype, end_of_turn_ids(source.tokenizer, source.template)
        )
        source.tokenizer.chat_template = jinja
        source.tokenizer.save_pretrained(tmp)

    yield from run_stage("writing", work, cancel)
    report = _report(plan)
    report["load"] = {
        "python": f"AutoModelForCausalLM.from_pretrained({str(plan.output)!r})",
    }
    return report


def _write_gguf(plan: Plan, source: Merged, tmp: Path, cancel):
    from studio.core.export.gguf_file import write_gguf
    from studio.core.export.jinja import jinja_template

    quant = plan.opts.quant
    jinja = jinja_template(source.template, source.tokenizer)
    tok_dir = tmp / ".tokenizer"
    source.tokenizer.chat_template = jinja
    source.tokenizer.save_pretrained(tok_dir)
    gguf_name = f"{plan.name}-{quant}.gguf"
    native = "f16" if quant in K_QUANTS else quant
    first = tmp / (f".{plan.name}-f16.gguf" if quant in K_QUANTS else gguf_name)
    summary = yield from run_stage(
        "writing GGUF",
        write_gguf,
        cancel,
        path=first,
        tensors=source.tensors,
        config=plan.config,
        tokenizer_dir=tok_dir,
        qtype=native,
        chat_template=jinja,
        name=plan.name,
        pre_tokenizer=plan.opts.pre_tokenizer,
        add_bos=_trained_with_bos(source),
    )
    if quant in K_QUANTS:
        from studio.core.export.verify import quantize_k

        yield _log(f"quantizing to {quant.upper()} with llama.cpp")
        yield from run_stage(
            "quantizing", quantize_k, cancel, src=first, dst=tmp / gguf_name, qtype=quant
        )
        first.unlink()
    shutil.rmtree(tok_dir, ignore_errors=True)
    report = _report(plan)
    report["gguf"] = dict(summary or {}, file=gguf_name)
    report["verification"] = yield from _verify(plan, source, tmp / gguf_name, cancel)
    run_cmd = f"llama-cli -m {plan.output / gguf_name} -cnv"
    report["commands"] = {"llama.cpp": run_cmd}
    if plan.opts.target == "ollama":
        report["commands"].update((yield from _write_modelfile(plan, jinja, tmp, gguf_name)))
        report["ollama_name"] = plan.name
    return report


def _trained_with_bos(source: Merged) -> bool | None:
    """Whether the trained prompts start with BOS: then llama.cpp and Ollama add it; a
    template that writes no BOS (ChatML on a Llama tokenizer) must not get one added."""
    bos = getattr(source.tokenizer, "bos_token", None)
    if not bos:
        return False
    try:
        text = source.template.prompt([{"role": "user", "content": "Hi"}])
    except Exception:  # a template refusing this tiny conversation: the tokenizer's own flag
        return None
    return text.startswith(bos)


def _verify(plan: Plan, source: Merged, gguf_path: Path, cancel):
    from studio.core.export.prompts import check_prompts
    from studio.core.export.verify import llama_cpp_available, verify_gguf

    if not plan.opts.verify:
        return {"status": "skipped", "reason": "verification was turned off"}
    if not llama_cpp_available():
        note = (
            'not verified: llama-cpp-python is not installed (pip install "studio[gguf]" to '
            "check every GGUF against the model you chatted with)"
        )
        yield _log(note, "warning")
        return {"status": "skipped", "reason": note}
    model = source.model
    if model is None:  # merged from the files: the check needs it in transformers too
        model = (yield from _load(plan, cancel, " in transformers, to check the GGUF")).model
    yield _log("verifying: the GGUF in llama.cpp against the merged model in transformers")
    result = yield from run_stage(
        "verifying",
        verify_gguf,
        cancel,
        gguf_path=gguf_path,
        model=model,
        tokenizer=source.tokenizer,
        template=source.template,
        prompts=check_prompts(plan.records),
        qtype=plan.opts.quant,
    )
    yield _log(result["summary"], "info" if result["status"] == "passed" else "warning")
    return result


def _write_modelfile(plan: Plan, jinja: str, tmp: Path, gguf_name: str):
    from studio.core.export.ollama import modelfile, ollama_template
    from studio.core.export.prompts import trained_system_prompt

    tmpl = ollama_template(jinja, plan.info.template)
    system = trained_system_prompt(plan.records)
    # "\n" on every platform: a Windows line ending would end up inside a multi-line SYSTEM.
    (tmp / "Modelfile").write_text(
        modelfile(gguf_name, tmpl, system=system), encoding="utf-8", newline="\n"
    )
    yield _log(f"Modelfile written ({tmpl.family} template, stop {', '.join(tmpl.stops)})")
    return {"ollama": f"ollama create {plan.name} -f {plan.output / 'Modelfile'}"}


def _write_lora_gguf(plan: Plan, tmp: Path, cancel):
    from studio.core.export.gguf_file import write_lora_gguf
    from studio.core.export.merge import run_quant

    name = f"{plan.name}-lora-{plan.opts.quant}.gguf"
    summary = yield from run_stage(
        "writing GGUF",
        write_lora_gguf,
        cancel,
        path=tmp / name,
        adapter_dir=plan.info.folder,
        base_config=plan.config,
        qtype=plan.opts.quant,
    )
    trained = run_quant(plan.info)
    note = "use it with a 16-bit (F16/BF16/F32) GGUF of the same base model"
    if trained != "none":
        note += f"; it was trained against the {trained} base"
    plan.notes.append(note)
    yield _log(note)
    report = _report(plan)
    report["gguf"] = dict(summary or {}, file=name)
    report["commands"] = {
        "llama.cpp": f"llama-cli -m BASE-f16.gguf --lora {plan.output / name} -cnv",
        "ollama": f"Modelfile: FROM ./BASE-f16.gguf and ADAPTER ./{name}",
    }
    return report


def _write_onnx(plan: Plan, merged, tmp: Path, cancel):
    from studio.core.export.jinja import jinja_template
    from studio.core.export.merge import save_hf
    from studio.core.export.onnx_export import export_onnx

    scratch = tmp / ".merged"
    save_hf(merged, scratch, jinja_template(merged.template, merged.tokenizer))
    summary = yield from run_stage(
        "writing ONNX", export_onnx, cancel, model_dir=scratch, out_dir=tmp
    )
    shutil.rmtree(scratch, ignore_errors=True)
    report = _report(plan)
    report["onnx"] = summary
    report["verification"] = yield from _verify_onnx(plan, merged, tmp, cancel)
    return report


def _verify_onnx(plan: Plan, merged, folder: Path, cancel):
    if not plan.opts.verify:
        return {"status": "skipped", "reason": "verification was turned off"}
    from studio.core.export.prompts import check_prompts
    from studio.core.export.verify import onnx_check

    result = yield from run_stage(
        "verifying",
        onnx_check,
        cancel,
        folder=folder,
        model=merged.model,
        tokenizer=merged.tokenizer,
        template=merged.template,
        prompts=check_prompts(plan.records),
    )
    yield _log(result["summary"], "info" if result["status"] == "passed" else "warning")
    return result
