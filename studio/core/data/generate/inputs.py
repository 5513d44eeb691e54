"""The input of a generation: prompts, each with its line and (when it has one) its answer.

More shapes are accepted than training accepts, because prompts need no answer: a JSONL/JSON/
CSV/Parquet row with `prompt` (or `instruction`, `question`; plus `input` and `system`),
`messages` or `conversations` ending with the user's turn (or with an answer, which is then
kept apart), `text`, or a plain .txt file (one prompt a paragraph). A row that is none of
these is skipped and counted; a file with no prompt at all is one sentence (DataError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.core.data.formats import ROLE_ALIASES, _norm
from studio.core.data.readers import BadRow, open_source
from studio.core.data.records import Problem, first_problems
from studio.core.errors import DataError

PROMPT_KEYS = ("prompt", "instruction", "question", "query", "user")
ANSWER_KEYS = ("output", "response", "answer", "completion", "chosen")
TURN_KEYS = (("messages", "role", "content"), ("conversations", "from", "value"))


@dataclass
class Item:
    """One prompt of the input file."""

    line: int
    """1-based line where its row starts (recorded in each output row's meta)."""
    messages: list[dict]
    """The prompt's turns, ending with the user's."""
    answer: str = ""
    """Its answer in the file, if it had one."""

    @property
    def instruction(self) -> str:
        return self.messages[-1]["content"]


class Skip(Exception):
    pass


def read_items(path: str) -> tuple[list[Item], list[Problem]]:
    """Every usable prompt of `path`, and a Problem for each row that is not one."""
    source = open_source(path)
    items, problems = [], []
    for line, value, _ in source.rows:
        try:
            items.append(to_item(value, line))
        except Skip as e:
            problems.append(Problem(line, str(e)))
    if not items:
        detail = f": {first_problems(problems)}" if problems else ""
        raise DataError(
            f"{path} holds no prompt{detail}; expected rows with a prompt (or instruction), "
            "messages ending with the user's turn, text, or a plain .txt file."
        )
    return items, problems


def to_item(value: Any, line: int) -> Item:
    if isinstance(value, BadRow):
        raise Skip(value.message)
    if isinstance(value, str):
        if not _text(value):
            raise Skip("empty prompt")
        return Item(line, [_user(value)])
    if not isinstance(value, dict):
        raise Skip(f"expected an object or a string, got {type(value).__name__}")
    row = {_norm(k): v for k, v in value.items()}
    for key, role_key, content_key in TURN_KEYS:
        if key in row:
            return _from_turns(row[key], line, role_key, content_key, row.get("system"))
    prompt = next((row[k] for k in PROMPT_KEYS if _text(row.get(k))), None)
    if prompt is None:
        prompt = row.get("text") if _text(row.get("text")) else None
    if prompt is None:
        raise Skip("no prompt, instruction, question, messages or text field")
    extra = row.get("input")
    if _text(extra):
        prompt = f"{prompt}\n\n{extra}"
    messages = [_user(prompt)]
    if _text(row.get("system")):
        messages.insert(0, {"role": "system", "content": row["system"]})
    answer = next((row[k] for k in ANSWER_KEYS if _text(row.get(k))), "")
    return Item(line, messages, answer)


def _from_turns(turns: Any, line: int, role_key: str, content_key: str, system: Any) -> Item:
    if not isinstance(turns, list) or not turns:
        raise Skip("messages: must be a non-empty list of turns")
    messages = []
    for i, t in enumerate(turns):
        role = ROLE_ALIASES.get(t.get(role_key, t.get("role"))) if isinstance(t, dict) else None
        content = t.get(content_key, t.get("content")) if isinstance(t, dict) else None
        if role is None or not isinstance(content, str):
            raise Skip(f"messages[{i}]: each turn needs a role and text content")
        messages.append({"role": role, "content": content})
    answer = ""
    if messages[-1]["role"] == "assistant":
        answer = messages.pop()["content"]
    if not messages or messages[-1]["role"] != "user" or not _text(messages[-1]["content"]):
        raise Skip("messages: the prompt must end with a user turn")
    if _text(system) and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return Item(line, messages, answer)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _user(text: str) -> dict:
    return {"role": "user", "content": text}
