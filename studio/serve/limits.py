"""What one request may cost the server, and the checks that hold a request to it.

Every bound has a default that no ordinary client reaches, and every refusal names the
bound and how to change it: `studio serve --max-body-mb / --max-connections /
--request-timeout`, or `App(model, limits=Limits(...))` from Python. connection.py applies
the bounds on the wire (head, framing, deadline, connections) before the app sees a
request; routes.py counts a chunked body as it comes and parses the JSON here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from studio.serve.errors import ApiError, bad_request

MiB = 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,19}")  # int() would also take "+5", " 5", "5_0" and "٥"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * MiB
    """Largest request body (413 beyond it). `studio serve --max-body-mb`."""
    max_header_bytes: int = 32 * 1024
    """Request headers in all, not counting the request line (431 beyond it)."""
    max_json_depth: int = 64
    """Deepest nesting of arrays and objects in a body; an OpenAI request needs about 5."""
    max_connections: int = 64
    """Connections served at once; one more is answered 503 at once, with Retry-After.
    Idle keep-alive connections give their place up to a new one. `--max-connections`."""
    request_timeout: float = 30.0
    """Seconds for a whole request (line, headers, body) to arrive once it has begun, and
    the longest a reply may wait for a client that stops reading. `--request-timeout`."""
    idle_timeout: float = 300.0
    """Seconds an idle keep-alive connection waits for its next request."""

    def __post_init__(self):
        for name in ("max_body_bytes", "max_header_bytes", "max_json_depth", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a whole number, 1 or more; got {value!r}")
        for name in ("request_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 1e6:
                raise ValueError(f"Limits.{name} must be a number of seconds; got {value!r}")


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB and n % (MiB // 16) == 0 else f"{n} bytes"


# ----------------------------------------------------------------------------- the body


def body_length(headers, limits: Limits) -> int | None:
    """The declared body length (0: none), None for chunked; refuses what cannot be read."""
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(
            415,
            f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed",
            code="unsupported_media_type",
        )
    transfer = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if transfer:
        codings = [c.strip().lower() for t in transfer for c in t.split(",") if c.strip()]
        if lengths:  # the two disagree about where the body ends: refuse (request smuggling)
            raise bad_request("send Content-Length or Transfer-Encoding: chunked, not both")
        if codings != ["chunked"]:
            raise bad_request(
                f"Transfer-Encoding {', '.join(codings)[:60]!r} is not supported; send a "
                "Content-Length or Transfer-Encoding: chunked"
            )
        return None
    if not lengths:
        return 0
    values = {v.strip() for v in lengths}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise bad_request("the Content-Length header is not a number of bytes")
    length = int(values.pop())
    if length > limits.max_body_bytes:
        raise too_large(limits, length)
    return length


def too_large(limits: Limits, length: int | None = None) -> ApiError:
    most = _size(limits.max_body_bytes)
    what = f"is {length} bytes" if length is not None else f"is larger than {most}"
    return ApiError(
        413,
        f"the request body {what}; this server takes at most {most} "
        "(studio serve --max-body-mb raises the limit)",
        code="request_too_large",
    )


# ----------------------------------------------------------------------------- JSON


def parse_json(raw: bytes, limits: Limits):
    """The body as JSON, refusing bytes that are not UTF-8 and nesting past the limit."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(
            f"the request body is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})"
        ) from None
    depth = limits.max_json_depth
    too_deep = bad_request(
        f"the JSON body is nested more than {depth} levels deep; an OpenAI request needs "
        "about 5 (the limit is Limits.max_json_depth)"
    )
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than Python's own parser goes, far past the limit
        raise too_deep from None
    except ValueError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    # Nesting is at most the number of brackets: most bodies skip the walk.
    if text.count("[") + text.count("{") > depth and _deeper_than(value, depth):
        raise too_deep
    return value


def _deeper_than(value, depth: int) -> bool:
    stack = [(value, 1)] if isinstance(value, (list, dict)) else []
    while stack:
        node, level = stack.pop()
        if level > depth:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (list, dict)):
                stack.append((child, level + 1))
    return False


# ----------------------------------------------------------------------------- the prompt


def prompt_floor(tokenizer, text: str, context: int) -> int | None:
    """A lower bound on the tokens in `text` when it certainly exceeds `context`, else None.

    Tokenizing is linear in the text but takes seconds per megabyte, under the model's lock:
    a 16 MiB prompt would hold every other client for most of a minute. So growing prefixes
    are tokenized first, and a prompt is refused as soon as one prefix is too long; a text
    that fits costs at most about twice its own tokenization.
    """
    size = 4 * context
    while size < len(text):
        n = len(tokenizer(text[:size], add_special_tokens=False)["input_ids"])
        floor = n - 64  # the word cut at the prefix's end may tokenize differently whole
        if floor > context:
            return floor
        size = max(2 * size, int(size * context / max(n, 1) * 1.25))
    return None
