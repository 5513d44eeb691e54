"""The OpenAI wire format: request bodies in, response and stream-chunk objects out.

Only plain dicts here (no HTTP, no torch), so the mapping is easy to read and to test.
Which fields are honoured, accepted and ignored, or refused is studio/serve/fields.py's to
say: a field this server cannot honour is a 400 naming it, never silently dropped.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from studio.core.errors import ConfigError
from studio.core.generation import GenerationSettings
from studio.serve import fields
from studio.serve.errors import ApiError, bad_request

__all__ = ["ApiError", "Request", "bad_request", "parse_chat", "parse_completion"]

# OpenAI's own default when a request gives no limit would be "up to the context"; a
# smaller default keeps one careless request from holding the queue for minutes.
DEFAULT_MAX_TOKENS = 512


@dataclass
class Request:
    model: str
    stream: bool
    include_usage: bool
    settings: GenerationSettings
    max_tokens_given: bool = False
    """Whether the client set max_tokens (else DEFAULT_MAX_TOKENS, cut to what fits)."""
    messages: list[dict] | None = None
    """For chat completions."""
    prompt: str | None = None
    """For (legacy) completions."""

    @property
    def text(self) -> str:
        """Everything the client wrote into the prompt, for a cheap length check."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m["content"] for m in self.messages or [])


# Whole numbers must fit a signed 64-bit integer (what torch and every OpenAI client use).
INT_MAX = 2**63 - 1
MAX_STOP = 16
"""Stop strings per request (OpenAI takes 4); each is checked after every token."""
MAX_STOP_CHARS = 256
"""Longest stop string: matching costs its length squared per token."""


def _text(value: str, param: str) -> str:
    """A string the tokenizer can take: JSON's \\ud800 escapes make lone surrogates, which
    are not Unicode text and which no tokenizer encodes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad_request(
            f"'{param}' is not valid Unicode text: it holds a lone surrogate "
            f"(\\u{ord(value[e.start]):04x}) at character {e.start}",
            param,
        ) from None
    return value


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


def _max_tokens(body: dict) -> tuple[int, bool]:
    given = {k: body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None}
    if len(given) == 2 and len({repr(v) for v in given.values()}) == 2:
        raise bad_request(
            "give max_tokens or max_completion_tokens, not both with different values",
            "max_tokens",
        )
    name, value = next(iter(given.items()), ("max_tokens", None))
    n = _number({name: value}, name, int, DEFAULT_MAX_TOKENS)
    if n < 1:
        raise bad_request(f"'{name}' must be at least 1; got {n}", name)
    return n, bool(given)


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("'stop' must be a string or a list of strings", "stop")
    if len(stop) > MAX_STOP:
        raise bad_request(f"'stop' holds {len(stop)} strings; at most {MAX_STOP} are taken", "stop")
    for s in stop:
        _text(s, "stop")
        if len(s) > MAX_STOP_CHARS:
            raise bad_request(
                f"a stop string is {len(s)} characters; at most {MAX_STOP_CHARS} are taken", "stop"
            )
    return stop


def _settings(body: dict) -> tuple[GenerationSettings, bool]:
    max_tokens, given = _max_tokens(body)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("'seed' must be a whole number", "seed")
    # The range itself is GenerationSettings' to check (what the torch generator accepts).
    try:
        settings = GenerationSettings(
            temperature=_number(body, "temperature", float, 1.0),
            top_p=_number(body, "top_p", float, 1.0),
            top_k=_number(body, "top_k", int, 0),
            max_new_tokens=max_tokens,
            repetition_penalty=_number(body, "repetition_penalty", float, 1.0),
            seed=seed,
            stop=_stop(body),
        )
    except ConfigError as e:
        name = (e.field or "").removeprefix("generation.")
        name = {"max_new_tokens": "max_tokens"}.get(name, name)
        raise bad_request(e.message.replace(e.field or "", name), name) from None
    return settings, given


_PART_TYPES = {"image_url": "images", "input_audio": "audio", "file": "files"}


def _content(value, i: int) -> str:
    """A message's content: a string, or a list of parts of which only text is understood."""
    param = f"messages[{i}].content"
    if isinstance(value, str):
        return _text(value, param)
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in _PART_TYPES:  # not hashed unless a string
                raise bad_request(
                    f"{param}[{j}]: this server reads text only, not {_PART_TYPES[kind]}", param
                )
            if kind != "text" or not isinstance(part.get("text"), str):
                raise bad_request(
                    f'{param}[{j}] must be a text part, {{"type": "text", "text": ...}}',
                    param,
                )
            texts.append(_text(part["text"], param))
        return "".join(texts)
    raise bad_request(f"{param} must be a string or a list of text parts", param)


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
        fields.check(
            m, fields.MESSAGE, fields.MESSAGE_IGNORED, fields.MESSAGE_REFUSED, f"messages[{i}]"
        )
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            tools = " (tool results need function calling, which this server does not do)"
            raise bad_request(
                f"messages[{i}].role must be system, user or assistant; got {str(role)[:40]!r}"
                + (tools if role in ("tool", "function") else ""),
                f"messages[{i}].role",
            )
        out.append({"role": role, "content": _content(m.get("content"), i)})
    return out


def _common(body, known: set, refused: dict) -> tuple[str, bool, bool]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    fields.check(body, known | fields.SAMPLING, fields.IGNORED, refused)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (see GET /v1/models)", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    fields.check(
        options, fields.STREAM_OPTIONS, fields.STREAM_OPTIONS_IGNORED, {}, "stream_options"
    )
    include_usage = options.get("include_usage", False)
    if include_usage is not None and not isinstance(include_usage, bool):
        raise bad_request(
            "'stream_options.include_usage' must be true or false", "stream_options.include_usage"
        )
    return model, stream, bool(include_usage)


def parse_chat(body) -> Request:
    model, stream, usage = _common(body, fields.CHAT, fields.REFUSED_CHAT)
    settings, given = _settings(body)
    return Request(model, stream, usage, settings, given, messages=_messages(body))


def parse_completion(body) -> Request:
    model, stream, usage = _common(body, fields.COMPLETION, fields.REFUSED_COMPLETION)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise bad_request(f"'prompt' holds {len(prompt)} prompts; send one per request", "prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise bad_request("'prompt' as token ids is not supported; send text", "prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string", "prompt")
    settings, given = _settings(body)
    return Request(model, stream, usage, settings, given, prompt=_text(prompt, "prompt"))


MAX_INPUTS = 2048
"""Texts per embeddings request (OpenAI's own bound)."""


def parse_embeddings(body) -> tuple[str, list[str], str]:
    """(model, the input texts, encoding_format) of an embeddings request."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    fields.check(body, fields.EMBEDDINGS, fields.EMBEDDINGS_IGNORED, fields.REFUSED_EMBEDDINGS)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (see GET /v1/models)", "model")
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(t, (int, list)) for t in inputs):
        raise bad_request("'input' as token ids is not supported; send text", "input")
    if not (isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs)):
        raise bad_request("'input' must be a string or a non-empty list of strings", "input")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(
            f"'input' holds {len(inputs)} texts; at most {MAX_INPUTS} are taken", "input"
        )
    for i, t in enumerate(inputs):
        if not t:
            raise bad_request(f"input[{i}] is empty", "input")
        _text(t, "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return model, inputs, encoding


def embeddings_response(model: str, vectors: list[list[float]], tokens: int, encoding: str):
    import base64
    import struct

    def encode(v: list[float]):
        if encoding == "float":
            return v
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


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
