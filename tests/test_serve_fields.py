"""The honest API surface: a field the server cannot honour is a 400 naming it, never ignored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

from studio.core.infer import load_chat_model  # noqa: E402
from studio.serve import App, fields  # noqa: E402
from tests.serve_http import check_error  # noqa: E402

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
CHAT = {"model": "model", "messages": HELLO, "max_tokens": 1}
COMPLETION = {"model": "model", "prompt": "The quick brown", "max_tokens": 1}
README = Path(__file__).resolve().parents[1] / "README.md"

# A value each refused field cannot be honoured with.
ON = {
    "n": 2,
    "frequency_penalty": 0.5,
    "presence_penalty": -1,
    "logit_bias": {"50": 10},
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    "tool_choice": "required",
    "functions": [{"name": "get_weather", "parameters": {}}],
    "function_call": {"name": "get_weather"},
    "response_format": {"type": "json_object"},
    "logprobs": True,
    "top_logprobs": 3,
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "store": True,
    "web_search_options": {},
    "reasoning_effort": "low",
    "verbosity": "high",
    "best_of": 3,
    "echo": True,
    "suffix": "the end",
}


@pytest.fixture(scope="module")
def server(tiny_model):
    with App(load_chat_model(str(tiny_model))).start(port=0) as app:
        yield app


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    yield c
    c.close()


def post(app, body, path="/v1/chat/completions"):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            return 200, json.loads(data)
        return resp.status, check_error(resp.status, resp.headers, data)
    finally:
        conn.close()


def test_tools_are_refused_naming_the_field(client):
    """The issue's case: `tools` used to be dropped, and the client got plain text."""
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="model", messages=HELLO, tools=[ON["tools"][0]])
    assert e.value.status_code == 400 and e.value.param == "tools"
    assert e.value.code == "unsupported_parameter" and "function calling" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="model", messages=HELLO, response_format={"type": "json_object"}
        )
    assert e.value.param == "response_format" and "JSON" in e.value.message


@pytest.mark.parametrize(
    "path, base, refused",
    [("/v1/chat/completions", CHAT, fields.REFUSED_CHAT)]
    + [("/v1/completions", COMPLETION, fields.REFUSED_COMPLETION)],
    ids=["chat", "completions"],
)
def test_every_refused_field_is_400_unless_off(server, path, base, refused):
    for name, (off, why) in refused.items():
        status, err = post(server, {**base, name: ON[name]}, path)
        assert status == 400 and err["param"] == name, (name, err)
        assert err["code"] == "unsupported_parameter" and why in err["message"], err
        for value in (None, *off):  # what clients send when they mean "not this"
            status, reply = post(server, {**base, name: value}, path)
            assert status == 200, (name, value, reply)


@pytest.mark.parametrize("name", sorted(fields.IGNORED))
def test_ignored_fields_are_accepted_and_type_checked(server, name):
    kind = fields.IGNORED[name][0]
    value = {str: "someone", dict: {"k": "v"}, bool: True}[kind]
    assert post(server, {**CHAT, name: value})[0] == 200
    status, err = post(server, {**CHAT, name: [1, 2]})
    assert status == 400 and err["param"] == name


def test_unknown_fields_are_refused_so_typos_are_caught(server):
    status, err = post(server, {**CHAT, "max_token": 5})
    assert status == 400 and err["param"] == "max_token" and err["code"] == "unknown_parameter"
    status, err = post(server, {**CHAT, "min_p": 0.1})
    assert status == 400 and "unknown field 'min_p'" in err["message"]
    status, err = post(server, {**CHAT, "stream": True, "stream_options": {"chunk": 1}})
    assert status == 400 and err["param"] == "stream_options.chunk"


def test_message_fields(server):
    named = [{"role": "user", "content": "Hi", "name": "ann"}]
    assert post(server, {**CHAT, "messages": named})[0] == 200
    # An answer from OpenAI sent back as history carries these empty fields: accepted.
    echoed = {"role": "assistant", "content": "Hello!", "refusal": None, "tool_calls": []}
    assert post(server, {**CHAT, "messages": [*HELLO, echoed, *HELLO]})[0] == 200
    calls = {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}
    status, err = post(server, {**CHAT, "messages": [*HELLO, calls]})
    assert status == 400 and err["param"] == "messages[1].tool_calls"
    status, err = post(server, {**CHAT, "messages": [{"role": "tool", "content": "42"}]})
    assert status == 400 and "function calling" in err["message"]
    # Found by the fuzzer: a part whose type is a list was looked up in a dict (a 500).
    status, err = post(server, {**CHAT, "messages": [{"role": "user", "content": [{"type": []}]}]})
    assert status == 400 and err["param"] == "messages[0].content"
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    status, err = post(server, {**CHAT, "messages": [{"role": "user", "content": image}]})
    assert status == 400 and "text only, not images" in err["message"]
    status, err = post(server, {**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]})
    assert status == 400 and "lone surrogate" in err["message"]
    assert err["param"] == "messages[0].content"


def test_completion_prompt_shapes(server):
    assert post(server, {**COMPLETION, "prompt": ["one prompt"]}, "/v1/completions")[0] == 200
    status, err = post(server, {**COMPLETION, "prompt": ["a", "b"]}, "/v1/completions")
    assert status == 400 and "send one per request" in err["message"]
    status, err = post(server, {**COMPLETION, "prompt": [1, 2, 3]}, "/v1/completions")
    assert status == 400 and "token ids" in err["message"]


def test_stop_strings_are_bounded(server):
    status, err = post(server, {**CHAT, "stop": ["x"] * 17})
    assert status == 400 and "at most 16" in err["message"]
    status, err = post(server, {**CHAT, "stop": "y" * 257})
    assert status == 400 and "at most 256" in err["message"]
    assert post(server, {**CHAT, "stop": ["x"] * 16})[0] == 200


def test_readme_lists_every_field():
    """The README's serve table is the policy in prose: no field is missing from it."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Chat and serve") :]
    section = section[: section.index("\n## ", 5)]
    listed = set(re.findall(r"`([a-z_]+)`", section))
    everything = (
        fields.SAMPLING
        | fields.CHAT
        | fields.COMPLETION
        | set(fields.IGNORED)
        | set(fields.REFUSED_CHAT)
        | set(fields.REFUSED_COMPLETION)
        | set(fields.MESSAGE_IGNORED)
    )
    assert everything <= listed, sorted(everything - listed)
