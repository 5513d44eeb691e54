"""Which request fields this server honours, which it accepts and ignores, and which it refuses.

A client that asks for something the server does not do (function calling, JSON mode, log
probabilities, several answers) must hear so, not get a plain answer that looks like what
it asked for: such a field is refused with a 400 naming it, unless it carries the value
that means "off" (`tools: []`, `n: 1`, `logprobs: false`...), which many clients send on
every request. Fields that change nothing about the answer (an end-user id, metadata for
stored completions) are accepted and ignored; each says why. Any other field is refused as
unknown, as OpenAI itself does, so a typo (`max_token`) is caught rather than ignored.
The README's table of the serve API is this module in prose.
"""

from __future__ import annotations

from studio.serve.errors import bad_request

SAMPLING = {"temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop"}
CHAT = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"}
COMPLETION = {"model", "prompt", "stream", "stream_options", "max_tokens"}
EMBEDDINGS = {"model", "input", "encoding_format"}

# name -> (the types it may have, why it does not matter here)
IGNORED = {
    "user": (str, "an end-user id for the provider's abuse monitoring; nothing is logged by it"),
    "safety_identifier": (str, "the newer name of `user`"),
    "metadata": (dict, "tags for stored completions; this server stores none"),
    "service_tier": (str, "a processing tier; this server has one"),
    "prompt_cache_key": (str, "a prompt-cache hint; the answer is the same without it"),
    "prediction": (dict, "predicted output, a speed hint; the answer is the same without it"),
    "parallel_tool_calls": (bool, "only means something with `tools`, which are refused"),
}

_TOOLS = "function calling is not supported by this server; send the request without it"
_LOGPROBS = "log probabilities are not returned by this server"

# name -> (the values that mean "off" and are accepted, why anything else is refused)
_REFUSED_BOTH = {
    "n": ((1,), "only n=1 is supported: send one request per answer"),
    "frequency_penalty": ((0,), "use repetition_penalty instead (1 is off; above 1 repeats less)"),
    "presence_penalty": ((0,), "use repetition_penalty instead (1 is off; above 1 repeats less)"),
    "logit_bias": (({},), "token biases are not supported by this server"),
}
REFUSED_CHAT = {
    **_REFUSED_BOTH,
    "tools": (([],), _TOOLS),
    "tool_choice": (("none", "auto"), _TOOLS),
    "functions": (([],), _TOOLS),
    "function_call": (("none", "auto"), _TOOLS),
    "response_format": (
        ({"type": "text"},),
        "only {'type': 'text'} is supported (no JSON mode or schema); ask for JSON in the prompt",
    ),
    "logprobs": ((False,), _LOGPROBS),
    "top_logprobs": ((0,), _LOGPROBS),
    "modalities": ((["text"],), "this server answers in text only"),
    "audio": ((), "this server answers in text only"),
    "store": ((False,), "this server does not store completions"),
    "web_search_options": ((), "web search is not available on this server"),
    "reasoning_effort": ((), "this server has no reasoning-effort setting"),
    "verbosity": ((), "this server has no verbosity setting; ask in the prompt"),
}
REFUSED_COMPLETION = {
    **_REFUSED_BOTH,
    "logprobs": ((), _LOGPROBS),
    "best_of": ((1,), "only best_of=1 is supported"),
    "echo": ((False,), "echo is not supported: the answer holds the continuation only"),
    "suffix": (("",), "suffix (inserting text between a prompt and a suffix) is not supported"),
}

REFUSED_EMBEDDINGS = {
    "dimensions": (
        (),
        "the vectors have the model's hidden size; shortening them is not supported",
    ),
}
EMBEDDINGS_IGNORED = {"user": IGNORED["user"]}

MESSAGE = {"role", "content"}
MESSAGE_IGNORED = {"name": (str, "a participant's name; chat templates have no place for it")}
MESSAGE_REFUSED = {
    "tool_calls": (([],), _TOOLS),
    "function_call": ((), _TOOLS),
    "tool_call_id": ((), _TOOLS),
    "audio": ((), "this server reads text only"),
    "refusal": ((), "a refusal from an earlier answer cannot be sent back as content"),
    "annotations": (([],), "annotations (URL citations) are not supported"),
}
STREAM_OPTIONS = {"include_usage"}
STREAM_OPTIONS_IGNORED = {"include_obfuscation": (bool, "padding against side channels")}


def _is_off(value, allowed) -> bool:
    if value is None:
        return True
    for a in allowed:
        # True == 1 and 0 == False in Python: a bool only matches a bool.
        if isinstance(a, bool) or isinstance(value, bool):
            if type(a) is type(value) and a == value:
                return True
        elif isinstance(a, (int, float)) and isinstance(value, (int, float)):
            if a == value:
                return True
        elif type(a) is type(value) and a == value:
            return True
    return False


def check(obj: dict, known: set, ignored: dict, refused: dict, where: str = "") -> None:
    """Refuse unknown fields, refused ones not at their "off" value, and ill-typed ignored ones."""
    for name, value in obj.items():
        param = f"{where}.{name}" if where else name
        if name in known:
            continue
        if name in ignored:
            kind, _ = ignored[name]
            if value is not None and not isinstance(value, kind):
                raise bad_request(f"'{param}' must be a {kind.__name__} or null", param)
            continue
        if name in refused:
            allowed, why = refused[name]
            if not _is_off(value, allowed):
                raise bad_request(
                    f"'{param}' is not supported: {why}", param, "unsupported_parameter"
                )
            continue
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise bad_request(
            f"unknown field '{shown}'" + (f" in {where}" if where else "") + "; the fields this "
            "server takes are listed in the README (serve section)",
            param if len(param) <= 200 else None,
            "unknown_parameter",
        )
