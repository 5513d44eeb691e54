"""Every bound `studio serve` holds a request to: each refused clearly, in JSON, and cheaply."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import tracemalloc

import pytest

from studio.cli import main
from studio.core.generation import GenerationSettings, pick_token
from studio.core.infer import load_chat_model
from studio.serve import App, Limits
from tests.serve_http import check_error, exchange, replies

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
VALID = json.dumps({"model": "model", "messages": HELLO, "max_tokens": 2}).encode()
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    return load_chat_model(str(tiny_model))


@pytest.fixture(scope="module")
def server(chat_model):
    with App(chat_model).start(port=0) as app:
        yield app


def serve(chat_model, **limits):
    return App(chat_model, limits=Limits(**limits)).start(port=0)


def request(port, method="POST", path="/v1/chat/completions", body=VALID, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def error(port, *args, **kwargs) -> tuple[int, dict]:
    status, headers, body = request(port, *args, **kwargs)
    return status, check_error(status, headers, body)


def post_head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def answered(sock: socket.socket) -> bytes:
    data = b""
    while part := sock.recv(65536):
        data += part
    return data


# ----------------------------------------------------------------------------- nesting


def test_deep_nesting_is_400_not_a_recursion_error(server):
    # The case: 50,000 '[' was "500 internal error: maximum recursion depth exceeded".
    status, err = error(server.port, body=b"[" * 50_000)
    assert status == 400 and "nested more than 64 levels" in err["message"]
    # Past the bound but well within what Python's parser manages: the bound itself.
    deep = b'{"model": "model", "messages": ' + b"[" * 70 + b"]" * 70 + b"}"
    status, err = error(server.port, body=deep)
    assert status == 400 and "nested more than 64 levels" in err["message"]
    # At the bound, the body parses and is refused for what it is instead.
    ok = b'{"model": "model", "messages": ' + b"[" * 63 + b"]" * 63 + b"}"
    status, err = error(server.port, body=ok)
    assert status == 400 and err["param"] == "messages[0]", err


# ----------------------------------------------------------------------------- body size


def test_64_mib_body_is_413_and_the_server_holds_none_of_it(server):
    """The client sends all 64 MiB and then reads a 413, not a reset connection; the server
    refuses from the Content-Length and drops the bytes into a small buffer."""
    chunk = bytes(MiB)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(post_head(64 * MiB))
        for _ in range(64):
            sock.sendall(chunk)
        reply = answered(sock)
        sock.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [(status, headers, body)] = replies(reply, "POST")
    err = check_error(status, headers, body)
    assert status == 413 and headers["Connection"] == "close"
    assert "67108864 bytes" in err["message"] and "16 MiB" in err["message"]
    assert "--max-body-mb" in err["message"]
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB allocated while refusing a 64 MiB body"
    assert request(server.port)[0] == 200


def test_oversized_body_with_expect_100_is_refused_before_it_is_sent(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(post_head(64 * MiB, "Expect: 100-continue\r\n"))
    reply = answered(sock)  # no body sent at all: the 413 comes instead of "100 Continue"
    sock.close()
    [(status, _, body)] = replies(reply, "POST")
    assert status == 413 and b"100 Continue" not in reply


def test_body_limit_is_the_flag_and_holds_for_chunked_bodies(chat_model):
    with serve(chat_model, max_body_bytes=1000) as app:
        status, err = error(app.port, body=b" " * 1001)
        assert status == 413 and "1001 bytes" in err["message"] and "1000 bytes" in err["message"]
        chunks = b"".join(b"100\r\n" + b" " * 256 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        data = post_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
        [(status, headers, body)] = replies(exchange(app.port, data + chunks), "POST")
        assert (
            status == 413
            and "larger than 1000 bytes" in check_error(status, headers, body)["message"]
        )


def test_chunked_body_is_read(server):
    data = post_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    cut = len(VALID) // 2
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (VALID[:cut], VALID[cut:]))
    [(status, _, reply)] = replies(exchange(server.port, data + body + b"0\r\n\r\n"), "POST")
    assert status == 200 and json.loads(reply)["object"] == "chat.completion"


@pytest.mark.parametrize(
    "headers, message",
    [
        ("Content-Length: 5\r\nContent-Length: 7\r\n", "not a number of bytes"),
        ("Content-Length: +5\r\n", "not a number of bytes"),
        ("Transfer-Encoding: gzip\r\n", "Transfer-Encoding 'gzip' is not supported"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "not both"),
    ],
)
def test_body_framing_that_cannot_be_trusted_is_400(server, headers, message):
    data = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
    [(status, hdrs, body)] = replies(exchange(server.port, data + b"hello"), "POST")
    assert status == 400 and message in check_error(status, hdrs, body)["message"]


def test_compressed_body_is_415(server):
    status, err = error(server.port, headers={"Content-Encoding": "gzip"})
    assert status == 415 and "uncompressed" in err["message"]


# ----------------------------------------------------------------------------- headers


def test_headers_past_their_bound_are_431(server):
    status, err = error(server.port, "GET", "/v1/models", None, {"X-Big": "a" * 40_000})
    assert status == 431 and "larger than 32768 bytes" in err["message"]
    many = "".join(f"X-{i}: y\r\n" for i in range(150))
    [(status, headers, body)] = replies(
        exchange(server.port, f"GET /v1/models HTTP/1.1\r\n{many}\r\n".encode())
    )
    assert status == 431 and "100 lines" in check_error(status, headers, body)["message"]
    assert request(server.port, "GET", "/v1/models", None)[0] == 200


def test_request_line_past_64_kib_is_414(server):
    data = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"
    [(status, headers, body)] = replies(exchange(server.port, data))
    assert status == 414 and "65536 bytes" in check_error(status, headers, body)["message"]


@pytest.mark.parametrize(
    "line", [b"GET /v1/models HTTP/2.0", b"GET /v1/models HTTP/0.9", b"GET /v1/models FOO/1"]
)
def test_unusable_http_versions_are_400_with_a_status_line(server, line):
    [(status, headers, body)] = replies(exchange(server.port, line + b"\r\n\r\n"))
    assert status == 400 and check_error(status, headers, body)


def test_wrong_method_is_405_with_allow_and_head_gets_no_body(server):
    status, headers, body = request(server.port, "GET", "/v1/chat/completions", None)
    assert status == 405 and headers["Allow"] == "POST"
    assert "use POST" in check_error(status, headers, body)["message"]
    status, headers, body = request(server.port, "DELETE", "/v1/models", None)
    assert status == 405 and headers["Allow"] == "GET"
    [(status, _, body)] = replies(
        exchange(server.port, b"HEAD /v1/models HTTP/1.1\r\n\r\n"), "HEAD"
    )
    assert status == 405 and body == b""


# ----------------------------------------------------------------------------- time


def test_slowloris_is_cut_off_at_the_request_timeout(chat_model):
    """Trickling a byte now and then keeps every single read short; the deadline is for the
    whole request, so the client gets a 408 once it has passed, while others are served."""
    with serve(chat_model, request_timeout=1.0) as app:
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=0.1)
        start = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        reply = b""
        while not reply and time.monotonic() - start < 5:
            sock.sendall(b"X")
            assert request(app.port, "GET", "/health", None)[0] == 200  # others go on
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                pass
        took = time.monotonic() - start
        sock.settimeout(10)
        reply += answered(sock)
        sock.close()
    [(status, headers, body)] = replies(reply)
    err = check_error(status, headers, body)
    assert (
        status == 408 and "within 1 s" in err["message"] and "--request-timeout" in err["message"]
    )
    assert took < 3, took


def test_body_slower_than_the_request_timeout_is_408(chat_model):
    with serve(chat_model, request_timeout=0.5) as app:
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        sock.sendall(post_head(len(VALID)) + VALID[:10])
        reply = answered(sock)
        sock.close()
    [(status, _, _)] = replies(reply, "POST")
    assert status == 408


# ----------------------------------------------------------------------------- connections


def test_connections_past_the_cap_get_503_at_once_not_a_thread(chat_model):
    with serve(chat_model, max_connections=2, request_timeout=5.0) as app:
        busy = []
        for _ in range(2):  # two requests under way (a request line, no end of headers yet)
            s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
            s.sendall(b"GET /v1/models HTTP/1.1\r\n")
            busy.append(s)
        time.sleep(0.2)
        threads = threading.active_count()
        for _ in range(10):
            start = time.monotonic()
            status, headers, body = request(app.port, "GET", "/v1/models", None)
            assert time.monotonic() - start < 1.0
            err = check_error(status, headers, body, busy=True)
            assert status == 503 and headers["Retry-After"] == "1"
            assert (
                "limit of 2 connections" in err["message"] and "--max-connections" in err["message"]
            )
        assert threading.active_count() <= threads  # no thread was started for any of them
        for s in busy:
            s.sendall(b"\r\n")
            assert replies(answered_one(s))[0][0] == 200
            s.close()
        time.sleep(0.2)
        assert request(app.port)[0] == 200


def answered_one(sock: socket.socket) -> bytes:
    """One keep-alive response: read until its JSON body is complete."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_idle_keep_alive_connections_give_their_place_up(chat_model):
    with serve(chat_model, max_connections=2) as app:
        idle = [http.client.HTTPConnection("127.0.0.1", app.port, timeout=10) for _ in range(2)]
        for c in idle:  # each served once, then left open and idle in its client's pool
            c.request("GET", "/v1/models")
            resp = c.getresponse()
            assert resp.status == 200 and resp.read()
        assert request(app.port)[0] == 200  # a newcomer is served, not refused
        for c in idle:
            c.close()


# ----------------------------------------------------------------------------- tokens


def long_conversation(chat_model, room: int) -> list[dict]:
    """A conversation whose prompt leaves `room` tokens or a few fewer of the context."""
    context, n = chat_model.context_length, 1
    while len(chat_model.prompt_ids([{"role": "user", "content": "hello " * (2 * n)}])) < (
        context - room
    ):
        n *= 2
    low, high = n, 2 * n  # bisect the word count to the longest that leaves `room`
    while low < high:
        mid = (low + high + 1) // 2
        messages = [{"role": "user", "content": "hello " * mid}]
        low, high = (
            (mid, high)
            if len(chat_model.prompt_ids(messages)) <= context - room
            else (
                low,
                mid - 1,
            )
        )
    return [{"role": "user", "content": "hello " * low}]


def test_max_tokens_bounds_are_400_naming_the_lengths(server, chat_model):
    context = chat_model.context_length
    body = {"model": "model", "messages": HELLO}
    for value in (0, -5):
        status, err = error(server.port, body=json.dumps({**body, "max_tokens": value}))
        assert status == 400 and err["param"] == "max_tokens" and "at least 1" in err["message"]
    status, err = error(server.port, body=json.dumps({**body, "max_tokens": context}))
    assert status == 400 and err["code"] == "context_length_exceeded"
    assert f"max_tokens is {context}" in err["message"] and f"holds {context}" in err["message"]
    prompt = len(chat_model.prompt_ids(HELLO))
    status, err = error(server.port, body=json.dumps({**body, "max_tokens": context - prompt + 1}))
    assert status == 400 and err["param"] == "max_tokens"
    assert f"the prompt is {prompt} tokens" in err["message"]
    assert f"ask for at most {context - prompt}" in err["message"]
    status, err = error(
        server.port, body=json.dumps({**body, "max_tokens": 3, "max_completion_tokens": 4})
    )
    assert status == 400 and "not both" in err["message"]


def test_max_tokens_up_to_the_context_is_served_and_the_default_fits(server, chat_model):
    messages = long_conversation(chat_model, room=4)
    room = chat_model.context_length - len(chat_model.prompt_ids(messages))
    assert 1 <= room <= 4
    body = {"model": "model", "messages": messages}
    status, _, reply = request(server.port, body=json.dumps({**body, "max_tokens": room}))
    assert status == 200 and json.loads(reply)["usage"]["completion_tokens"] <= room
    status, _, reply = request(server.port, body=json.dumps(body))  # default 512, cut to fit
    assert status == 200 and json.loads(reply)["usage"]["completion_tokens"] <= room


def test_a_huge_prompt_is_refused_before_it_is_tokenized_whole(server, chat_model):
    context = chat_model.context_length
    words = "hello world " * 400_000  # 4.8 MB: tens of seconds of tokenizing under the lock
    body = {"model": "model", "messages": [{"role": "user", "content": words}]}
    status, err = error(server.port, body=json.dumps(body))
    assert status == 400 and err["code"] == "context_length_exceeded"
    # "more than N": refused from a prefix, so it never paid for the whole text.
    assert "the prompt is more than" in err["message"] and f"holds {context}" in err["message"]
    status, err = error(
        server.port, "POST", "/v1/completions", json.dumps({"model": "model", "prompt": words})
    )
    assert status == 400 and err["param"] == "prompt" and "more than" in err["message"]


def test_sampling_stays_finite_at_extreme_settings(chat_model):
    """Found by the body fuzzer: temperature 2.2e-309 (0 in float32) made the probabilities
    NaN, a 500; a repetition penalty near 0 overflowed the same way."""
    import torch

    logits = torch.tensor([1.0, 3.0, -2.0, 3.0 - 1e-6])
    history = torch.tensor([0, 2])
    for settings in (
        GenerationSettings(temperature=2.225073858507203e-309, top_p=1.0, top_k=0),
        GenerationSettings(temperature=5e-324, top_p=0.5, top_k=2),
        GenerationSettings(temperature=1e308, repetition_penalty=1e-300),
        GenerationSettings(temperature=1.0, repetition_penalty=1e300),
    ):
        token = pick_token(logits, settings, history, torch.Generator().manual_seed(0))
        assert 0 <= token < 4
    tiny = GenerationSettings(temperature=1e-309, top_p=1.0, top_k=0)
    assert pick_token(logits, tiny, history, torch.Generator().manual_seed(0)) == 1  # ~greedy


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "flag, value", [("--max-connections", "0"), ("--max-body-mb", "0"), ("--request-timeout", "-1")]
)
def test_cli_refuses_a_bound_that_cannot_work_before_loading(capsys, flag, value):
    assert main(["serve", "--model", "/nonexistent", flag, value]) == 2
    assert f"{flag} must be above 0" in capsys.readouterr().err


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0)
    with pytest.raises(ValueError, match="request_timeout"):
        Limits(request_timeout=float("nan"))
