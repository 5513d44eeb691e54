"""What the Generate dialog runs and keeps, without widgets: the modes in plain words, the
`studio data generate` command line, the child process that runs it (GenerateJob), and the
preview's rows (each kept, accepted or rejected, and editable field by field).

Generation runs as `python -m studio data generate ... --events`, as exports do, so a crash
or an out-of-memory kill while the model answers can never take the window down. The output
JSONL is written row by row by the core and continued when the same command runs again:
Stop is a graceful SIGTERM, Continue starts the same command once more.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QProcess

from studio.gui.export_job import ExportJob

MODES = {
    "answer": "Answer prompts that have none",
    "paraphrase": "Reword each instruction N times",
    "self-instruct": "Invent new examples from a few",
    "pairs": "Two answers per prompt to choose from",
}
"""The core's modes (studio.core.data.generate) in plain words, in the order shown."""
MODE_HELP = {
    "answer": "The model writes an answer to every prompt of the file; prompts that already "
    "have one keep theirs out of it.",
    "paraphrase": "Each instruction is reworded N times, keeping its answer: more ways of "
    "asking the same thing.",
    "self-instruct": "From a few example records, the model invents new instructions and "
    "answers them.",
    "pairs": "The model answers each prompt twice; the two answers become a preference pair "
    "(better and worse) for DPO, ORPO or SimPO.",
}
STAGES = {
    "loading": "Loading the model",
    "reading": "Reading the prompts",
    "generating": "Writing rows",
    "answering": "Answering",
    "judging": "Asking the judge",
}


@dataclass
class GenerateChoice:
    mode: str
    input: str
    output: str
    model: str = ""
    quant: str = "none"
    endpoint: str = ""
    endpoint_model: str = ""
    api_key: str = field(default="", repr=False)
    n: int = 2
    count: int = 20
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 8
    overwrite: bool = False


def generate_args(c: GenerateChoice) -> list[str]:
    """The arguments after `studio`: the same list is shown (key hidden) and run."""
    args = ["data", "generate", c.mode, "--input", c.input, "--output", c.output]
    if c.endpoint:
        args += ["--endpoint", c.endpoint, "--endpoint-model", c.endpoint_model]
        if c.api_key:
            args += ["--api-key", c.api_key]
    else:
        args += ["--model", c.model]
        if c.quant != "none":
            args += ["--quant", c.quant]
    if c.mode == "paraphrase":
        args += ["--n", str(c.n)]
    if c.mode == "self-instruct":
        args += ["--count", str(c.count)]
    args += ["--temperature", f"{c.temperature:g}", "--max-new-tokens", str(c.max_new_tokens)]
    if c.batch_size != 8:  # the core's default
        args += ["--batch-size", str(c.batch_size)]
    if c.overwrite:
        args.append("--overwrite")
    return args


def shown_command(args: list[str]) -> str:
    import shlex

    shown = list(args)
    if "--api-key" in shown:  # a secret is never shown on screen
        shown[shown.index("--api-key") + 1] = "KEY"
    return "studio " + shlex.join(shown)


def data_folder(project) -> Path:
    """Where generated and cleaned files go: PROJECT/data, or the user data dir's data/."""
    if project is not None:
        return Path(project.folder) / "data"
    from studio.core import paths

    return paths.data_dir() / "data"


def output_path(project, input_path: str, mode: str) -> Path:
    """The generation's own JSONL: the same input and mode give the same file, so starting
    again later continues it (the core skips the rows already there)."""
    stem = Path(input_path).stem or "prompts"
    return data_folder(project) / "generated" / f"{stem}-{mode}.jsonl"


def free_path(folder: Path, stem: str) -> Path:
    """folder/stem.jsonl, or stem-2.jsonl, ... : never an existing file."""
    path, n = folder / f"{stem}.jsonl", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.jsonl"
    return path


# --- the preview's rows ---------------------------------------------------------------------

PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"


@dataclass
class PreviewRow:
    index: int
    """Its 0-based line in the generation's output file."""
    record: dict
    status: str = PENDING
    edited: bool = False
    picked: int | None = None
    """A pairs candidate: which of its two answers the person found better (0 or 1)."""

    @property
    def candidate(self) -> bool:
        return is_candidate(self.record)

    def saved_record(self) -> dict | None:
        """What is saved: the record as edited; a candidate becomes a pair once picked
        (None until then: half a preference is no training row)."""
        if self.status == REJECTED:
            return None
        if not self.candidate:
            return self.record
        if self.picked is None:
            return None
        answers = self.record["answers"]
        meta = dict(self.record.get("meta") or {}, picked=self.picked)
        return {
            "prompt": self.record["prompt"],
            "chosen": answers[self.picked],
            "rejected": answers[1 - self.picked],
            "meta": meta,
        }


def is_candidate(record: dict) -> bool:
    """A pairs row the core could not judge: {"prompt", "answers": [a, b], ...} for a person
    to pick the better answer of."""
    answers = record.get("answers")
    return isinstance(answers, list) and len(answers) == 2 and "chosen" not in record


ORDER = ("system", "prompt", "instruction", "question", "input", "messages", "conversations",
         "answers", "chosen", "rejected", "output", "response", "answer", "text")  # fmt: skip


def text_fields(record: dict) -> list[tuple[tuple, str]]:
    """(path, label) of every text in a record, `meta` left out: what Edit lets one change.
    A path is the keys and list positions leading to the string."""
    found: list[tuple[tuple, str]] = []

    def walk(value, path: tuple, label: str) -> None:
        if isinstance(value, str):
            found.append((path, label))
        elif isinstance(value, dict):
            role = value.get("role") or value.get("from")
            for k, v in value.items():
                if k in ("role", "from") and isinstance(role, str):
                    continue
                walk(v, (*path, k), _role_label(label, role) if role else _label(k, label))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i), label)

    candidate = is_candidate(record)
    # The question before the answers, whatever order the keys came in (JSON may sort them).
    ordered = sorted(record, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    for key in ordered:
        value = record[key]
        if key == "meta" or (candidate and key == "messages"):
            continue  # a candidate's messages repeat its first answer: not edited apart
        if candidate and key == "answers":
            found += [((key, i), f"Answer {'AB'[i]}") for i in range(2)]
        else:
            walk(value, (key,), key.replace("_", " ").capitalize())
    return found


def _role_label(parent: str, role: str) -> str:
    """A turn of the conversation: its role ("User"); a turn of a pair's side: "Chosen · user"."""
    return role.capitalize() if parent in ("Messages", "Conversations") else f"{parent} · {role}"


def _label(key: str, parent: str) -> str:
    name = key.replace("_", " ")
    return f"{parent} · {name}" if parent else name.capitalize()


def get_field(record: dict, path: tuple) -> str:
    value = record
    for step in path:
        value = value[step]
    return value


def set_field(record: dict, path: tuple, text: str) -> None:
    target = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = text


def summary(record: dict, width: int = 110) -> str:
    """One line for the preview list: the texts joined, meta left out."""
    parts = [get_field(record, p).strip() for p, _ in text_fields(record)]
    # Each part isolated (FSI...PDI): a right-to-left answer cannot reorder the whole line.
    text = "  →  ".join(f"\u2068{p}\u2069".replace("\n", " ⏎ ") for p in parts if p)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_rows(path: str | Path) -> list[dict]:
    """The rows already in a generation's output file (a torn last line is left out)."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_kept(rows: list[PreviewRow], path: str | Path) -> int:
    """The rows not rejected (as edited; candidates picked) as a new JSONL, written to a temporary name and
    renamed so a half-written file is never imported. Returns how many were written."""
    ordered = (r.saved_record() for r in sorted(rows, key=lambda r: r.index))
    kept = [record for record in ordered if record is not None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{int(time.time())}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in kept:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(kept)


# --- the child process -----------------------------------------------------------------------


class GenerateJob(ExportJob):
    """One `studio data generate --events` child; `ended(status, output, message)` comes once."""

    def __init__(self, args: list[str], output: str, cwd: str, **kwargs):
        super().__init__(args, cwd, **kwargs)
        self.output = output

    def _finished(self, code: int, exit_status) -> None:
        self.kill_timer.stop()
        self._read_events()
        self._read_log()
        last = self.last or {}
        if last.get("type") == "done" and last.get("status") == "completed":
            self._end("completed", self.output, "")
        elif last.get("type") == "done" or self.cancelled:
            self._end(
                "stopped",
                self.output,
                "Stopped. The rows written so far are kept: Continue picks up where it stopped.",
            )
        elif last.get("type") == "error":
            self._end("failed", self.output, str(last.get("message") or "Generation failed."))
        else:
            self._end("failed", self.output, self._crash_message(code, exit_status))

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end("failed", "", f"Generation could not start: {self.process.errorString()}")

    def _crash_message(self, code: int, exit_status) -> str:
        how = self._ended_how(code, exit_status, STAGES)
        return (
            f"The generation process {how}. The rows written so far are kept: "
            "Continue picks up where it stopped. The log says more."
        )
