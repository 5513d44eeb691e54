"""What the Export page runs and shows, without widgets: the runs it can export, the facts
about a run's base model (for size estimates), the type rows for each target, the
`studio export` command line, and ExportJob, which supervises that command as a child process.

The export runs as `python -m studio export ... --events`, as training does, so a crash or an
out-of-memory kill in the merge can never take the window down. The child prints one JSON
event per line on stdout; QProcess reads it through the event loop, so the GUI thread never
waits on the child. Cancel is graceful (SIGTERM: the core stops at its next progress tick and
removes its temporary folder) and becomes a kill after a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from studio.core.export.options import BITS_PER_WEIGHT, GGUF_QUANTS, K_QUANTS, QUALITY

TARGET_LABELS = {
    "gguf": "GGUF for llama.cpp / LM Studio",
    "ollama": "Ollama (GGUF + Modelfile)",
    "hf": "Hugging Face folder (merged safetensors)",
    "lora-gguf": "LoRA adapter as GGUF",
    "onnx": "ONNX (onnxruntime)",
}
LORA_QUANTS = ("f32", "f16", "bf16", "q8_0")
HF_DTYPES = {
    "auto": "As stored in the base model: the same answers as in Chat.",
    "float16": "16-bit: half of 32-bit, the same answers in practice.",
    "bfloat16": "16-bit with a wider range: the usual for recent models.",
    "float32": "32-bit: twice the size of 16-bit for no gain in answers.",
}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
STAGES = {
    "merging": "Merging the adapter into the base model",
    # A plain LoRA is merged tensor by tensor as the files are written (stream_merge).
    "writing": "Merging the adapter and writing the files",
    "writing GGUF": "Merging the adapter and writing the GGUF file",
    "quantizing": "Quantizing with llama.cpp",
    "verifying": "Checking the result against the merged model",
    "writing ONNX": "Writing the ONNX model",
}
"""Each stage of the core's progress events in plain words."""
GGUF_EXTRA = 'needs llama-cpp-python: pip install "studio[gguf]"'
ONNX_EXTRA = 'needs onnxruntime: pip install "studio[onnx]"'


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def onnx_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


# --- the runs and their base models (on worker threads) ----------------------------------


def export_runs(runs_dir) -> list[tuple[str, str, str]]:
    """(label, run folder, status) of each run with a final adapter, newest first."""
    from studio.core import runs

    out = []
    for state, _summary in runs.list_runs(runs_dir):
        if not (state.folder / "adapter" / "adapter_config.json").is_file():
            continue
        loss = f", loss {state.final_loss:.3f}" if state.final_loss is not None else ""
        out.append((f"{state.name} ({state.status}{loss})", str(state.folder), state.status))
    return out


@dataclass
class RunFacts:
    """What the page needs to know about the chosen run: where its exports go by default
    and how big its base model is (for the size of each type)."""

    folder: str
    home: str
    """RUN (or the adapter's parent): the default exports go to HOME/exports/."""
    base: str = ""
    num_params: int = 0
    dtype: str = "float32"
    """The dtype the base is stored in (what --dtype auto merges in)."""
    adapter_params: int = 0
    problem: str = ""
    """Why the sizes are unknown (the base model cannot be read here), or empty."""


def read_facts(folder: str) -> RunFacts:
    """Reads config and safetensors headers only: no weights, no torch."""
    from studio.core.errors import StudioError
    from studio.core.export.merge import stored_dtype
    from studio.core.infer import find_adapter
    from studio.core.model_info import read_model_info, resolve_model_dir, safetensors_header

    try:
        info = find_adapter(folder)
    except StudioError as e:
        return RunFacts(folder, str(Path(folder)), problem=e.message)
    home = info.run_dir if info.run_dir is not None else info.folder.parent
    facts = RunFacts(folder, str(home), base=info.base_model)
    try:
        for f in info.folder.glob("adapter_model*.safetensors"):
            for name, meta in safetensors_header(f).items():
                if name != "__metadata__":
                    n = 1
                    for d in meta["shape"]:
                        n *= d
                    facts.adapter_params += n
    except (OSError, StudioError, ValueError, KeyError):
        pass  # the LoRA sizes stay unknown; everything else still works
    if not facts.base:
        facts.problem = "the run does not say which base model it was trained on"
        return facts
    try:
        # No network here: a hub id not yet downloaded is fetched by the export itself.
        base_dir = resolve_model_dir(facts.base, allow_network=False)
        facts.num_params = read_model_info(str(base_dir)).num_params
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
        facts.dtype = stored_dtype(config)
    except (StudioError, OSError, ValueError) as e:
        facts.problem = f"cannot read the base model {facts.base}: {getattr(e, 'message', e)}"
    return facts


# --- types, sizes and the command line ---------------------------------------------------


@dataclass
class TypeRow:
    key: str
    label: str
    size: int | None
    """Expected file size in bytes; None when the base model's size is unknown."""
    note: str
    enabled: bool = True


def type_rows(target: str, facts: RunFacts | None, llama_ok: bool) -> list[TypeRow]:
    n = facts.num_params if facts is not None else 0
    if target in ("gguf", "ollama"):
        rows = []
        for q in sorted(GGUF_QUANTS, key=lambda q: -BITS_PER_WEIGHT[q]):
            # The file itself, not the disk the export needs (K-quants pass through an f16).
            size = int(n * BITS_PER_WEIGHT[q] / 8) if n else None
            ok = llama_ok or q not in K_QUANTS
            rows.append(TypeRow(q, q.upper(), size, QUALITY[q] if ok else GGUF_EXTRA, ok))
        return rows
    if target == "lora-gguf":
        a = facts.adapter_params if facts is not None else 0
        return [
            TypeRow(q, q.upper(), int(a * BITS_PER_WEIGHT[q] / 8) if a else None, QUALITY[q])
            for q in LORA_QUANTS
        ]
    if target == "hf":
        stored = facts.dtype if facts is not None else "float32"
        rows = []
        for key, note in HF_DTYPES.items():
            dtype = stored if key == "auto" else key
            label = f"auto ({stored})" if key == "auto" else key
            rows.append(TypeRow(key, label, n * DTYPE_BYTES[dtype] if n else None, note))
        return rows
    return [
        TypeRow(
            "float32",
            "float32",
            n * 4 if n else None,
            "32-bit: what onnxruntime's CPU kernels run.",
        )
    ]


def default_output(facts: RunFacts, target: str, key: str) -> str:
    """RUN/exports/<target>-<type>, the folder `studio export` picks when given none
    (pipeline.default_output, from the facts the page already has)."""
    if target == "hf":
        kind = f"hf-{facts.dtype if key == 'auto' else key}"
    elif target == "onnx":
        kind = "onnx"
    else:
        kind = f"{target}-{key}"
    return str(Path(facts.home) / "exports" / kind)


@dataclass
class ExportChoice:
    adapter: str
    target: str
    key: str
    """The GGUF type (gguf/ollama/lora-gguf), the merge dtype (hf) or float32 (onnx)."""
    output: str = ""
    """Empty: the default folder."""
    overwrite: bool = False
    verify: bool = True


def export_args(c: ExportChoice) -> list[str]:
    """The arguments after `studio`: the same list is shown to the user and run."""
    args = ["export", "--adapter", c.adapter, "--to", c.target]
    if c.target in ("gguf", "ollama", "lora-gguf"):
        args += ["--quant", c.key]
    elif c.target == "hf" and c.key != "auto":
        args += ["--dtype", c.key]
    if c.output:
        args += ["--output", c.output]
    if c.overwrite:
        args.append("--overwrite")
    if not c.verify:
        args.append("--no-verify")
    return args


def shown_command(args: list[str]) -> str:
    import shlex

    return "studio " + shlex.join(args)


def eta_text(seconds: float) -> str:
    if seconds < 1:
        return ""
    if seconds < 90:
        return f"about {int(seconds + 0.5)} s left"
    return f"about {int(seconds / 60 + 0.5)} min left"


# --- the child process --------------------------------------------------------------------


class ExportJob(QObject):
    """One `studio export --events` child. Signals arrive on the GUI thread (QProcess lives
    there and reads through the event loop); `ended` comes exactly once."""

    event = Signal(dict)
    log_text = Signal(str)
    ended = Signal(str, str, str)
    """(status, folder, message): completed + the output folder, stopped, or failed + why."""

    def __init__(self, args: list[str], cwd: str, *, stop_timeout_ms: int = 30000, parent=None):
        super().__init__(parent)
        self.args = args
        self.stop_timeout_ms = stop_timeout_ms
        self.last: dict | None = None
        self.stage = ""
        """The stage of the last progress event (to say where a crash happened)."""
        self.cancelled = False
        self.killed = False
        self._buffer = b""
        self._done = False
        self.process = QProcess(self)
        self.process.setProgram(sys.executable)
        self.process.setArguments(["-m", "studio", *args, "--events"])
        self.process.setWorkingDirectory(cwd if os.path.isdir(cwd) else os.getcwd())
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")  # paths in events may not be ASCII
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_events)
        self.process.readyReadStandardError.connect(self._read_log)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.kill_timer = QTimer(self)
        self.kill_timer.setSingleShot(True)
        self.kill_timer.timeout.connect(self._kill)

    def start(self) -> None:
        self.process.start()

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        """SIGTERM (the core cleans up and exits 130); a kill if it is still going later."""
        if not self.running() or self.cancelled:
            return
        self.cancelled = True
        self.process.terminate()
        self.kill_timer.start(self.stop_timeout_ms)

    def stop_and_wait(self, timeout_ms: int = 10000) -> None:
        """At app exit: stop the child and wait for it (blocks; not for normal use)."""
        if not self.running():
            return
        self.cancel()
        if not self.process.waitForFinished(timeout_ms):
            self.process.kill()
            self.process.waitForFinished(3000)

    def _kill(self) -> None:
        if self.running():
            self.killed = True
            self.process.kill()

    def _read_events(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line.decode("utf-8", "replace"))
            except ValueError:  # a stray print from a library: keep it in the log
                self.log_text.emit(line.decode("utf-8", "replace") + "\n")
                continue
            if isinstance(ev, dict):
                if ev.get("type") == "progress":
                    self.stage = str(ev.get("stage") or "")
                if ev.get("type") in ("done", "error"):
                    self.last = ev
                self.event.emit(ev)

    def _read_log(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self.log_text.emit(text.replace("\r", "\n"))

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end("failed", "", f"The export could not start: {self.process.errorString()}")

    def _finished(self, code: int, exit_status) -> None:
        self.kill_timer.stop()
        self._read_events()  # what the child wrote just before it ended
        self._read_log()
        last = self.last or {}
        if last.get("type") == "done" and last.get("status") == "completed":
            self._end("completed", str(last.get("adapter") or ""), "")
        elif last.get("type") == "done" or (self.cancelled and not last):
            message = "Export cancelled; nothing was written."
            if self.killed:
                message = (
                    "The export did not stop in time and was ended; nothing was written "
                    "(its temporary folder is removed by the next export)."
                )
            self._end("stopped", "", message)
        elif last.get("type") == "error":
            self._end("failed", "", str(last.get("message") or "The export failed."))
        else:
            self._end("failed", "", self._crash_message(code, exit_status))

    def _ended_how(self, code: int, exit_status, stages: dict[str, str]) -> str:
        """How a child with no result ended, and in which stage: "crashed (signal 9) while
        writing the file"; `stages` words the stage names of the job's own events."""
        if exit_status == QProcess.ExitStatus.CrashExit:
            how = f"crashed (signal {code})" if os.name == "posix" else "crashed"
        else:
            how = f"ended (exit code {code})"
        words = stages.get(self.stage, self.stage)
        return how + (f" while {words[0].lower()}{words[1:]}" if words else "")

    def _crash_message(self, code: int, exit_status) -> str:
        """A child that ended with no result: a native crash (llama.cpp, onnxruntime), the
        out-of-memory killer, or a Python error outside the pipeline's handlers."""
        how = self._ended_how(code, exit_status, STAGES)
        message = f"The export process {how}; nothing was written. The log says more."
        if self.stage == "verifying":
            message += " Export again with the check turned off to skip it."
        return message

    def _end(self, status: str, folder: str, message: str) -> None:
        if not self._done:
            self._done = True
            self.ended.emit(status, folder, message)


def read_report(folder: str) -> dict:
    """OUTPUT/export.json (a small file), or {} when it cannot be read."""
    try:
        return json.loads((Path(folder) / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def report_commands(report: dict) -> list[str]:
    """How to use the export: llama.cpp / Ollama commands, or the transformers line."""
    lines = [f"# {name}\n{cmd}" for name, cmd in (report.get("commands") or {}).items()]
    python = (report.get("load") or {}).get("python")
    if python:
        lines.append(
            f"# transformers\nfrom transformers import AutoModelForCausalLM\nmodel = {python}"
        )
    return lines
