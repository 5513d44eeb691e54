"""Preference pairs as people's datasets hold them -> `Record`s with `chosen` and `rejected`.

TRL's conventions, which most preference datasets already follow:

- standard: `{"prompt": str, "chosen": str, "rejected": str}`;
- conversational: `{"prompt": [turns], "chosen": [assistant turn], "rejected": [assistant turn]}`;
- implicit prompt: `{"chosen": [whole conversation], "rejected": [whole conversation]}`, the
  prompt being the turns both conversations share before their last answer;
- and the common hybrid (UltraFeedback-binarized): a prompt string with chosen and rejected
  as whole conversations that repeat it.

`question` or `instruction` may stand for `prompt` (Intel/orca_dpo_pairs), and a `system`
string beside the prompt becomes its system turn. A plain-text prompt is the user's turn, so
pairs are rendered with the model's chat template like every other conversation here.
The result: `messages` are the prompt's turns (ending with the user's), `chosen` and
`rejected` the two answers.
"""

from __future__ import annotations

from typing import Any

from studio.core.data.formats import (
    ROLE_ALIASES,
    Invalid,
    _not_object,
    _slow_turn,
    _string,
    _type_name,
)
from studio.core.data.records import Record

EXPECTED = 'objects with "prompt", "chosen" and "rejected" (strings, or lists of messages)'
PROMPT_KEYS = ("prompt", "question", "instruction")
NEEDS = "each pair needs prompt, chosen and rejected"


class PairInvalid(Invalid):
    """A problem whose sentence already names its field (no "field: " prefix)."""

    @property
    def message(self) -> str:
        return self.reason


def convert_pair(row: Any, line: int) -> Record:
    """One pair record, or Invalid saying which field is wrong and why."""
    if type(row) is not dict:
        raise _not_object(row, 'an object with "prompt", "chosen" and "rejected"')
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise PairInvalid(key, f"the record has no '{key}' answer; {NEEDS}")
    key = next((k for k in PROMPT_KEYS if row.get(k) is not None), None)
    if key is None:
        prompt, chosen, rejected = _implicit(row["chosen"], row["rejected"])
    else:
        prompt = _prompt(row[key], key)
        chosen = _answer(row["chosen"], "chosen", prompt)
        rejected = _answer(row["rejected"], "rejected", prompt)
    system = row.get("system")
    if system and type(system) is str and prompt[0]["role"] != "system":
        prompt.insert(0, {"role": "system", "content": system})
    return Record(line, prompt, chosen=chosen, rejected=rejected)


def _turn_list(turns: Any, key: str) -> list[dict[str, str]]:
    """Normalised turns (roles system/user/assistant), any order; Invalid on a bad one."""
    if type(turns) is not list or not turns:
        what = "empty" if isinstance(turns, list) else _type_name(turns)
        raise Invalid(key, f"must be a string or a non-empty list of messages, got {what}")
    out = []
    for i, turn in enumerate(turns):
        try:
            role, content = ROLE_ALIASES[turn["role"]], turn["content"]
        except (KeyError, TypeError):
            role, content = _slow_turn(turn, key, i)
        if type(content) is not str:
            role, content = _slow_turn(turn, key, i)
        out.append({"role": role, "content": content})
    return out


def _prompt(value: Any, key: str) -> list[dict[str, str]]:
    if type(value) is str or _is_text_parts(value):
        text = value if type(value) is str else _string(value, key)
        if not text or text.isspace():
            raise Invalid(key, "empty prompt")
        return [{"role": "user", "content": text}]
    turns = _turn_list(value, key)
    if turns[-1]["role"] != "user":
        raise Invalid(
            key, f"the prompt ends with the {turns[-1]['role']}'s turn; it must end with the user's"
        )
    return turns


def _is_text_parts(value: Any) -> bool:
    """OpenAI content parts ([{"type": "text", "text": ...}]) rather than a list of turns."""
    return type(value) is list and bool(value) and type(value[0]) is dict and "type" in value[0]


def _answer(value: Any, key: str, prompt: list[dict[str, str]]) -> str:
    """The answer text: a string, one assistant turn, or a conversation that repeats the prompt."""
    if type(value) is str:
        return _non_empty(value, key)
    turns = _turn_list(value, key)
    last = turns[-1]
    if last["role"] != "assistant":
        raise Invalid(key, f"the answer is the {last['role']}'s turn; it must be the assistant's")
    before = turns[:-1]
    # Whole conversations beside a prompt (UltraFeedback): their turns before the answer must
    # be the prompt's, so that the pair is what it says it is.
    if before and not _same_prompt(before, prompt):
        raise Invalid(key, "the conversation before the answer is not the record's prompt")
    return _non_empty(last["content"], key)


def _same_prompt(before: list[dict], prompt: list[dict]) -> bool:
    if before == prompt:
        return True
    # A prompt string against a conversation that also has a system turn.
    return len(prompt) == 1 and before[-1] == prompt[0] and before[0]["role"] == "system"


def _implicit(chosen: Any, rejected: Any) -> tuple[list[dict], str, str]:
    """TRL's implicit prompt: two whole conversations; the prompt is what they share."""
    if type(chosen) is not list or type(rejected) is not list:
        raise PairInvalid(
            "prompt",
            "the record has no prompt; without one, chosen and rejected must be whole "
            f"conversations (lists of messages) that share the prompt's turns; {NEEDS}",
        )
    c, r = _turn_list(chosen, "chosen"), _turn_list(rejected, "rejected")
    shared = 0
    while shared < min(len(c), len(r)) - 1 and c[shared] == r[shared]:
        shared += 1
    prompt = c[:shared]
    for turns, key in ((c, "chosen"), (r, "rejected")):
        if len(turns) != shared + 1 or turns[-1]["role"] != "assistant":
            raise Invalid(
                key,
                "without a prompt, chosen and rejected must be the same conversation up to "
                "one different assistant answer at the end",
            )
    if not prompt or prompt[-1]["role"] != "user":
        raise Invalid("chosen", "the conversations share no prompt ending with a user turn")
    return prompt, _non_empty(c[-1]["content"], "chosen"), _non_empty(r[-1]["content"], "rejected")


def _non_empty(text: str, key: str) -> str:
    if not text or text.isspace():
        raise Invalid(key, "empty answer")
    return text
