"""The OpenAI wire format: request bodies in, response and stream-chunk objects out.

Only plain dicts here (no HTTP, no torch), so the mapping is easy to read and to test.
Unknown fields are ignored, as OpenAI-compatible servers usually do, so clients that send
newer options still work; fields we cannot honour (n > 1, logprobs) are refused clearly.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from studio.core.errors import ConfigError
from studio.core.generation import GenerationSettings

# OpenAI's own default when a request gives no limit would be "up to the context"; a
# smaller default keeps one careless request from holding the queue for minutes.
DEFAULT_MAX_TOKENS = 512


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class Request:
    model: str
    stream: bool
    include_usage: bool
    settings: GenerationSettings
    messages: list[dict] | None = None
    """For chat completions."""
    prompt: str | None = None
    """For (legacy) completions."""


# Whole numbers must fit a signed 64-bit integer (what torch and every OpenAI client use).
INT_MAX = 2**63 - 1


def _number(body: dict, name: str, kind, default):
    value = body.get(name)
    if value is None:
        return default
    what = "whole number" if kind is int else "number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"'{name}' must be a {what}", name)
    # Python's json accepts Infinity, NaN and 1e400 (= inf): refuse them here, before any
    # arithmetic on them overflows.
    if isinstance(value, float) and not math.isfinite(value):
        raise bad_request(f"'{name}' must be a finite {what}; got {value}", name)
    if kind is int:
        if value != int(value):
            raise bad_request(f"'{name}' must be a {what}", name)
        if not -INT_MAX - 1 <= value <= INT_MAX:
            raise bad_request(f"'{name}' is out of range (-2**63 to 2**63-1)", name)
        return int(value)
    try:
        return float(value)
    except OverflowError:  # a whole number too big for a float
        raise bad_request(f"'{name}' is out of range", name) from None


def _settings(body: dict) -> GenerationSettings:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("'stop' must be a string or a list of strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("'seed' must be a whole number", "seed")
    # The range itself is GenerationSettings' to check (what the torch generator accepts).
    try:
        return GenerationSettings(
            temperature=_number(body, "temperature", float, 1.0),
            top_p=_number(body, "top_p", float, 1.0),
            top_k=_number(body, "top_k", int, 0),
            max_new_tokens=_number(
                {"max_tokens": max_tokens}, "max_tokens", int, DEFAULT_MAX_TOKENS
            ),
            repetition_penalty=_number(body, "repetition_penalty", float, 1.0),
            seed=seed,
            stop=stop or [],
        )
    except ConfigError as e:
        name = (e.field or "").removeprefix("generation.")
        name = {"max_new_tokens": "max_tokens"}.get(name, name)
        raise bad_request(e.message.replace(e.field or "", name), name) from None


def _content(value, i: int) -> str:
    """A message's content: a string, or a list of parts of which only text is understood."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad_request(
                    f"messages[{i}].content: only text parts are supported",
                    f"messages[{i}].content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"messages[{i}].content must be a string", f"messages[{i}].content")


def _messages(body: dict) -> list[dict]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request(
            "'messages' must be a non-empty list of {role, content} objects", "messages"
        )
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise bad_request(
                f"messages[{i}] must be an object with role and content", f"messages[{i}]"
            )
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise bad_request(
                f"messages[{i}].role must be system, user or assistant; got {role!r}",
                f"messages[{i}].role",
            )
        out.append({"role": role, "content": _content(m.get("content"), i)})
    return out


def _common(body) -> tuple[str, bool, bool]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (see GET /v1/models)", "model")
    if body.get("n", 1) != 1:
        raise bad_request("only n=1 is supported", "n")
    if body.get("logprobs") or body.get("echo"):
        raise bad_request(
            "logprobs and echo are not supported", "logprobs" if body.get("logprobs") else "echo"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return model, stream, include_usage


def parse_chat(body) -> Request:
    model, stream, usage = _common(body)
    return Request(model, stream, usage, _settings(body), messages=_messages(body))


def parse_completion(body) -> Request:
    model, stream, usage = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string", "prompt")
    return Request(model, stream, usage, _settings(body), prompt=prompt)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish(reason: str) -> str:
    # "cancelled" only happens when the server shuts down mid-answer: the text simply ends.
    return "length" if reason == "length" else "stop"


def usage(gen) -> dict:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }


def model_object(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "studio"}


def chat_response(rid: str, model: str, gen) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "logprobs": None,
                "finish_reason": finish(gen.finish_reason),
            }
        ],
        "usage": usage(gen),
    }


def chat_chunk(
    rid: str, model: str, delta: dict, finish_reason: str | None = None, *, use: dict | None = None
) -> dict:
    chunk = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if use is not None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if use is not None:
        chunk["usage"] = use
    return chunk


def completion_response(rid: str, model: str, gen) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": gen.text,
                "logprobs": None,
                "finish_reason": finish(gen.finish_reason),
            }
        ],
        "usage": usage(gen),
    }


def completion_chunk(
    rid: str, model: str, text: str, finish_reason: str | None = None, *, use: dict | None = None
) -> dict:
    chunk = {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if use is not None
        else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    if use is not None:
        chunk["usage"] = use
    return chunk
