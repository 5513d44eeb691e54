"""`studio export`: a trained run as a merged Hugging Face folder, GGUF, Ollama or ONNX.

Exit codes as `studio train`: 0 done, 1 failed while exporting, 2 bad input (one line, no
traceback), 130 cancelled (nothing is left under the output name).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading


def add_parser(sub) -> None:
    from studio.core.export.options import DTYPES, GGUF_QUANTS, QUALITY, TARGETS

    quality = "; ".join(f"{q}: {QUALITY[q]}" for q in GGUF_QUANTS)
    p = sub.add_parser(
        "export",
        help="export a run: merged safetensors, GGUF, Ollama, LoRA GGUF or ONNX",
        description=(
            "Export a trained run. hf: the adapter merged into the base, a folder stock "
            "transformers loads; gguf: one file for llama.cpp / LM Studio; ollama: GGUF plus a "
            "Modelfile; lora-gguf: the adapter alone for llama.cpp --lora; onnx: ONNX with a KV "
            "cache for onnxruntime."
        ),
    )
    p.add_argument(
        "--adapter", required=True, help="the run folder (or its adapter/ or a checkpoint)"
    )
    p.add_argument("--model", default="", help="the base model (default: the run's own)")
    p.add_argument("--to", dest="target", choices=TARGETS, default="gguf", help="what to write")
    p.add_argument("--quant", default="f16", metavar="TYPE", help=f"GGUF type ({quality})")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="merge dtype (hf/gguf/onnx)")
    p.add_argument("--output", default="", help="the folder to write (default RUN/exports/...)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the check of the GGUF in llama.cpp against transformers",
    )
    p.add_argument("--name", default="", help="the Ollama model name (default: the run's name)")
    p.add_argument(
        "--pre-tokenizer",
        default="",
        help="llama.cpp's pre-tokenizer name when Studio cannot recognise it",
    )
    p.add_argument(
        "--ollama-create",
        action="store_true",
        help="after an ollama export, run `ollama create` (needs ollama on PATH)",
    )
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) base weights")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model folder's code")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--events",
        action="store_true",
        help="print every event as one JSON line on stdout (for the app and scripts)",
    )
    p.set_defaults(handler=run)


class ExportProgress:
    """One progress line per stage on a terminal; plain lines otherwise."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream, self.quiet = stream or sys.stderr, quiet
        self.tty = self.stream.isatty()

    def __call__(self, event) -> None:
        if event.type == "error":
            return  # printed once by run()
        if self.quiet:
            return
        if event.type == "progress":
            if not self.tty:
                return
            width = 30
            filled = int(width * event.done / max(1, event.total))
            eta = f" ETA {int(event.eta_s)}s" if event.eta_s else ""
            count = f"{event.done}/{event.total}"
            if event.stage.startswith("download "):  # a hub model's bytes
                from studio.core.hub import bytes_text

                count = bytes_text(event.done, event.total)
            self.stream.write(
                f"\r\033[K{event.stage}: [{'#' * filled}{'-' * (width - filled)}] {count}{eta}"
            )
            self.stream.flush()
        elif event.type == "log":
            prefix = "warning: " if event.level == "warning" else ""
            self._line(prefix + event.message)

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def run(args) -> int:
    from studio.commands.train import quiet_library_noise
    from studio.core.export import ExportOptions, export_events

    quiet_library_noise()
    opts = ExportOptions(
        adapter=args.adapter,
        target=args.target,
        quant=args.quant,
        output=args.output,
        model=args.model,
        dtype=args.dtype,
        overwrite=args.overwrite,
        verify=args.verify,
        name=args.name,
        pre_tokenizer=args.pre_tokenizer,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
    )
    cancel = threading.Event()

    def on_signal(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        print("\nstopping the export (nothing will be left half-written)...", file=sys.stderr)
        cancel.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    show = ExportProgress(quiet=args.quiet or args.events)
    last = None
    for event in export_events(opts, cancel):
        show(event)
        if args.events:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        last = event
    if last is None or last.type == "error":
        message = getattr(last, "message", "the export produced no result")
        print(f"error: {message}", file=sys.stderr)
        return 2 if getattr(last, "kind", "") == "input" else 1
    if last.status == "stopped":
        return 130
    if args.events:
        return 0
    return _print_result(last.adapter, args)


def _print_result(folder: str, args) -> int:
    from pathlib import Path

    report = json.loads((Path(folder) / "export.json").read_text(encoding="utf-8"))
    print(folder)
    for name, command in report.get("commands", {}).items():
        print(f"  {name}: {command}")
    if args.ollama_create and "ollama" in report.get("commands", {}):
        if shutil.which("ollama") is None:
            print(
                "error: ollama is not on PATH; install it from ollama.com, then run the "
                "command above",
                file=sys.stderr,
            )
            return 1
        name = report.get("ollama_name") or Path(folder).name
        done = subprocess.run(
            ["ollama", "create", name, "-f", str(Path(folder) / "Modelfile")], check=False
        )
        if done.returncode != 0:
            print(f"error: ollama create failed (exit {done.returncode})", file=sys.stderr)
            return 1
    return 0
