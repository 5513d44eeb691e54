"""An LLM judge through any OpenAI-compatible endpoint (`studio serve`, vLLM, Ollama, OpenAI).

Each answer is scored 1-10 with a one-sentence reason. A judge is a model's opinion, not a
measurement: the report keeps its scores apart and says so. The HTTP client
(studio.core.openai_client, shared with data generation) is urllib, so the judge needs no
extra package; the key is sent as a Bearer token and never written anywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from studio.core.openai_client import TIMEOUT_S, ChatClient
from studio.core.openai_client import Unreachable as JudgeUnreachable  # noqa: F401 - re-exported
from studio.core.openai_client import chat_url as endpoint  # noqa: F401 - re-exported

SYSTEM = (
    "You are a strict grader. You are shown a question, optionally a reference answer, and an "
    "answer to grade. Score the answer from 1 (wrong or useless) to 10 (correct, complete and "
    "clear), judging correctness against the reference when there is one. Reply with JSON "
    'only: {"score": <1-10>, "reason": "<one sentence>"}.'
)


@dataclass
class Verdict:
    score: int | None
    reason: str


def judge_prompt(question: str, reference: str, answer: str) -> str:
    parts = [f"Question:\n{question}"]
    if reference.strip():
        parts.append(f"Reference answer:\n{reference}")
    parts.append(f"Answer to grade:\n{answer or '(empty)'}")
    return "\n\n".join(parts)


def parse_verdict(text: str) -> Verdict:
    """The score and reason from the judge's reply: JSON when it complied, else a 'score: N'
    it wrote in prose. A score outside 1-10 or none at all is None, with the reply as reason."""
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            obj = json.loads(match.group(0))
            score, reason = obj.get("score"), str(obj.get("reason", "")).strip()
            if isinstance(score, str) and score.strip().isdigit():
                score = int(score.strip())
            if type(score) in (int, float) and 1 <= score <= 10:
                return Verdict(int(round(score)), reason)
        except (ValueError, AttributeError):
            pass
    found = re.search(r"score\W{0,3}(\d{1,2})\b", text, re.I)
    if found and 1 <= int(found.group(1)) <= 10:
        return Verdict(int(found.group(1)), text.strip()[:300])
    return Verdict(None, f"the judge's reply had no score: {text.strip()[:200]!r}")


class Judge:
    def __init__(self, url: str, model: str, key: str = "", timeout: float = TIMEOUT_S):
        self.client = ChatClient(url, model, key, timeout)
        self.url, self.model = self.client.url, model

    def score(self, question: str, reference: str, answer: str) -> Verdict:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": judge_prompt(question, reference, answer)},
        ]
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 200}
        reply = self.client.post(body)
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return Verdict(None, f"the judge's reply was not a chat completion: {str(reply)[:200]}")
        return parse_verdict(text)
