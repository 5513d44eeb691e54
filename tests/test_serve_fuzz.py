"""Fuzzing `studio serve`: request bodies, then whole HTTP requests as raw bytes.

The property, for every input: the server answers with an HTTP response that is either an
OpenAI-shaped JSON error ({"error": {message, type, param, code}}, never a 5xx) or a valid
answer, and it keeps serving: a valid request after each example still works. Bounded
example counts in the suite; a longer run by hand:

    STUDIO_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_serve_fuzz.py
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import threading

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from studio.core.infer import load_chat_model
from studio.serve import App, Limits
from tests.serve_http import check_error, exchange, replies

SOAK = int(os.environ.get("STUDIO_FUZZ_EXAMPLES", "0") or 0)
"""The same knob as the other fuzz tests (tests/fuzzing.py): examples per harness."""
KEY = "fuzz-key"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
CONTEXT = 32


def fuzz(examples: int):
    return settings(
        max_examples=SOAK or examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def server(tiny_model):
    # A short context keeps every answer a valid example earns short (the fuzz is about
    # the parsing, not the model), and makes the context bounds easy to reach.
    model = dataclasses.replace(load_chat_model(str(tiny_model)), context_length=CONTEXT)
    before = set(threading.enumerate())
    app = App(model, api_key=KEY, limits=Limits(request_timeout=2.0)).start(port=0)
    yield app
    app.stop()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


# ----------------------------------------------------------------------------- checks


def check_answer(headers, body: bytes) -> None:
    if headers.get("Content-Type") == "text/event-stream":
        events = [e for e in body.decode("utf-8").split("\n\n") if e]
        assert events and all(e.startswith("data: ") for e in events), events
        assert events[-1] == "data: [DONE]", events
        for e in events[:-1]:
            chunk = json.loads(e[6:])
            assert chunk.get("object") in ("chat.completion.chunk", "text_completion"), chunk
        return
    obj = json.loads(body)
    if obj.get("object") in ("chat.completion", "text_completion"):
        choice = obj["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        assert isinstance(text, str) and choice["finish_reason"] in ("stop", "length"), obj
        assert obj["usage"]["prompt_tokens"] + obj["usage"]["completion_tokens"] <= CONTEXT, obj
    else:
        assert obj in ({"status": "ok"},) or obj.get("object") in ("list", "model"), obj


def check_response(status: int, headers, body: bytes) -> None:
    if status == 200:
        check_answer(headers, body)
    else:
        check_error(status, headers, body)


def still_serving(app) -> None:
    status, body = post(app, {"model": "model", "messages": HELLO, "max_tokens": 2})
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] is not None


def post(app, body, path="/v1/chat/completions"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    try:
        conn.request("POST", path, data, {"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        payload = resp.read()
        check_response(resp.status, resp.headers, payload)
        return resp.status, payload
    finally:
        conn.close()


def check_replies(received: bytes, method: str) -> int:
    """Every response in `received` is well-formed and keeps to the property; how many."""
    answers = replies(received, method)
    for status, headers, body in answers:
        if method == "HEAD":  # headers only, by definition
            assert status < 500 and body == b"", status
        else:
            check_response(status, headers, body)
    return len(answers)


# ----------------------------------------------------------------------------- bodies

SURROGATES = st.characters(categories=["Cs"])
# Built from a list: st.text() drops surrogates from any alphabet, even one made of them.
TEXT = st.lists(st.characters() | SURROGATES, max_size=30).map("".join)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.floats(min_value=-1e-300, max_value=1e-300),
    TEXT,
)
ANY = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=10
)
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "x"]) | ANY},
    optional={"text": TEXT | ANY, "image_url": ANY},
)
ROLE = st.sampled_from(["user", "system", "assistant", "developer"])
MESSAGE = st.one_of(
    # plain and mostly valid, so what is in the content reaches the template and tokenizer
    st.fixed_dictionaries({"role": ROLE, "content": TEXT}),
    st.fixed_dictionaries(
        {
            "role": ROLE | st.just("tool") | ANY,
            "content": TEXT | st.lists(PART, max_size=3) | ANY,
        },
        optional={
            k: ANY for k in ("name", "tool_calls", "refusal", "audio", "function_call", "x-extra")
        },
    ),
)


# Numbers at the edges of float arithmetic: subnormal, near 0, near overflow.
EXTREME = st.floats(0, 1e-30) | st.floats(1e30, 1.7e308) | st.sampled_from([5e-324, 1e308])


def field(*likely):
    return st.sampled_from(likely) | ANY if likely else ANY


FIELDS = {
    "messages": TEXT.map(lambda t: [{"role": "user", "content": t}])
    | st.lists(MESSAGE, max_size=3)
    | ANY,
    "prompt": TEXT | st.lists(TEXT, max_size=2) | st.lists(st.integers(), max_size=3) | ANY,
    "stream": field(True, False),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": ANY, "y": ANY}) | ANY,
    "max_tokens": st.integers(-2, 50) | ANY,
    "max_completion_tokens": st.integers(-2, 50) | ANY,
    "temperature": st.floats(0, 2) | EXTREME | ANY,
    "top_p": st.floats(0, 1) | EXTREME | ANY,
    "top_k": st.integers(-1, 600) | ANY,
    "repetition_penalty": st.floats(0, 3) | EXTREME | ANY,
    "seed": ANY,
    "stop": TEXT | st.lists(TEXT, max_size=3) | ANY,
    "n": field(1, 2, 0),
    "tools": field([], [{"type": "function", "function": {"name": "f"}}]),
    "tool_choice": field("none", "auto", "required"),
    "response_format": field({"type": "text"}, {"type": "json_object"}),
    "logprobs": field(False, True, 0, 5),
    "top_logprobs": field(0, 3),
    "logit_bias": field({}, {"50": 10}),
    "frequency_penalty": field(0, 0.5),
    "presence_penalty": field(0, -1),
    "echo": field(False, True),
    "best_of": field(1, 3),
    "suffix": field("", "tail"),
    "user": field("someone"),
    "metadata": field({"k": "v"}),
    "parallel_tool_calls": field(True),
    "functions": ANY,
    "store": field(False, True),
}
BASE = {
    "/v1/chat/completions": {"model": "model", "messages": HELLO, "max_tokens": 4},
    "/v1/completions": {"model": "model", "prompt": "The quick brown", "max_tokens": 4},
}
CHANGES = {**FIELDS, "model": field("model", "other"), "unknown-field": ANY}
# The fields that go furthest, into the template, the tokenizer and the generation loop:
# each is also fuzzed on its own (test_each_deep_field_fuzzed_alone), and drawn more often.
DEEP = ["messages", "prompt", "stop", "temperature", "top_p", "top_k", "repetition_penalty"]
DEEP += ["max_tokens", "max_completion_tokens", "seed", "stream", "stream_options", "model"]
KEYS = sorted(CHANGES) + DEEP * 2
CHANGE = st.sampled_from(KEYS).flatmap(lambda k: CHANGES[k].map(lambda v: (k, v)))


@st.composite
def bodies(draw, path: str):
    """A valid request with one field changed (each field's own handling), or with a few
    changed and one dropped (how they combine), or any JSON at all."""
    shape = draw(st.sampled_from(["one", "one", "few", "few", "any"]))
    if shape == "any":
        return draw(ANY)
    body = dict(BASE[path])
    if shape == "one":
        body.update([draw(CHANGE)])
        return body
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=1)):
        del body[key]
    body.update(draw(st.lists(CHANGE, max_size=3)))
    return body


def encoded(draw_body) -> bytes:
    return json.dumps(draw_body).encode("utf-8")


def raw_bodies(path: str):
    return st.one_of(
        bodies(path).map(encoded),
        bodies(path).map(encoded),
        bodies(path).map(encoded),
        # cut or spliced: valid JSON with a piece missing or foreign bytes inside
        st.tuples(bodies(path).map(encoded), st.integers(0, 200), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
        ),
        st.binary(max_size=64),
        # JSON's own traps: non-finite literals, huge numbers, deep nesting
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1" * 5000]).map(
            lambda x: f'{{"model": "model", "messages": {x}, "max_tokens": {x}}}'.encode()
        ),
        # deep nesting, with the bound (64) and Python's own recursion limit (~1000) in reach
        (st.integers(1, 3000) | st.sampled_from([63, 64, 65, 999, 1000, 1001, 100_000])).map(
            lambda n: ('{"model": "model", "messages": ' + "[" * n + "]" * n + "}").encode()
        ),
    )


PATHS = st.sampled_from(sorted(BASE))
REQUESTS = PATHS.flatmap(lambda p: st.tuples(st.just(p), raw_bodies(p)))


@fuzz(80)
@given(request=REQUESTS)
@example(request=("/v1/chat/completions", b"[" * 50_000))
@example(request=("/v1/chat/completions", b'{"model": "model", "messages": "\\ud800"}'))
@example(
    request=(
        "/v1/chat/completions",
        b'{"model": "model", "messages": [{"role": "user", "content": "\\ud800"}]}',
    )
)
@example(request=("/v1/completions", b'{"model": "\\udfff", "prompt": "x"}'))
def test_any_body_gets_an_answer_or_a_json_error(server, request):
    path, body = request
    answer_or_error(server, path, body)


@pytest.mark.parametrize("name", DEEP)
@fuzz(15)
@given(data=st.data())
def test_each_deep_field_fuzzed_alone(server, name, data):
    path = {"messages": "/v1/chat/completions", "prompt": "/v1/completions"}.get(name)
    path = path or data.draw(PATHS, label="path")
    body = {**BASE[path], name: data.draw(CHANGES[name], label=name)}
    answer_or_error(server, path, json.dumps(body).encode())


def answer_or_error(app, path: str, body: bytes) -> None:
    status, reply = post(app, body, path)
    # ascii(): hypothesis's statistics are UTF-8, and a param may hold a lone surrogate
    event(f"{status} {ascii(json.loads(reply)['error']['param']) if status != 200 else ''}")
    if status == 200:  # a valid request: the server obviously still serves
        return
    r = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    r.request("GET", "/health")
    assert r.getresponse().status == 200
    r.close()


def test_still_serving_after_the_body_fuzz(server):
    still_serving(server)


# ----------------------------------------------------------------------------- raw HTTP

TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
LINE_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "get"]) | TOKEN
TARGETS = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/model",
        "/v1/models/",
        "/health",
        "/v1/models/../../etc",
        "*",
        "http://127.0.0.1/v1/models",
        "/v1/chat/completions?x=1",
        "//v1/models",
    ]
) | TOKEN.map(lambda t: "/" + t)
VERSIONS = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1", "HTTP/1.1.1", "FOO/1.1", "HTTP/a.b"]
)
HEADER = st.one_of(
    st.tuples(
        st.just("Content-Length"), st.sampled_from(["0", "-1", "abc", "99999999999", "5, 7"])
    ),
    st.tuples(st.just("Transfer-Encoding"), st.sampled_from(["chunked", "gzip", "chunked, gzip"])),
    st.tuples(st.just("Content-Encoding"), st.sampled_from(["gzip", "identity", "br"])),
    st.tuples(st.just("Expect"), st.sampled_from(["100-continue", "nonsense"])),
    st.tuples(st.just("Connection"), st.sampled_from(["close", "keep-alive", "upgrade"])),
    st.tuples(st.just("Authorization"), st.sampled_from([f"Bearer {KEY}", "Bearer x", "Basic"])),
    st.tuples(st.just("Authorization"), LINE_TEXT),
    st.tuples(TOKEN, LINE_TEXT),
)
VALID = json.dumps({"model": "model", "messages": HELLO, "max_tokens": 2}).encode()


@st.composite
def requests(draw):
    """A request assembled from fuzzed parts, its header block always ended."""
    method, target, version = draw(METHODS), draw(TARGETS), draw(VERSIONS)
    body = draw(st.sampled_from([b"", VALID]) | st.binary(max_size=40))
    headers = [("Host", "x"), ("Authorization", f"Bearer {KEY}")]
    headers += draw(st.lists(HEADER, max_size=4))
    framing = draw(st.sampled_from(["length", "chunked", "none", "fuzzed"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        cut = draw(st.integers(0, len(body)))
        body = b"".join(
            b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:cut], body[cut:]) if p
        ) + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"zz\r\n"]))
    line = draw(st.sampled_from([f"{method} {target} {version}", f"{method} {target}"]))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return method, (line + "\r\n" + head + "\r\n").encode("latin-1") + body


@fuzz(150)
@given(request=requests())
@example(request=("GET", b"GET /v1/models HTTP/2.0\r\n\r\n"))
@example(request=("PUT", b"PUT /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"))
@example(request=("HEAD", b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"))
@example(request=("GET", b"GET /\r\n\r\n"))
@example(request=("GET", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"))
def test_any_request_gets_a_well_formed_json_reply(server, request):
    method, data = request
    received = exchange(server.port, data)
    # Answered, and every byte back parses as HTTP responses keeping to the property (an
    # empty request line is the one thing http.server closes on without a word).
    assert check_replies(received, method) >= 1 or not data.split(b"\r\n", 1)[0].strip()


@fuzz(100)
@given(data=st.binary(max_size=300))
@example(data=b"\r\n\r\n")
@example(data=b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
def test_arbitrary_bytes_never_break_the_server(server, data):
    check_replies(exchange(server.port, data), "GET")


def test_still_serving_after_the_request_fuzz(server):
    still_serving(server)
