"""`studio serve` on uvicorn: one event loop serves everyone, slow clients included."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from studio.core.infer import load_chat_model
from studio.serve import App, Limits
from tests.serve_http import check_error, exchange, replies

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
VALID = json.dumps({"model": "model", "messages": HELLO, "max_tokens": 2}).encode()


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    return load_chat_model(str(tiny_model))


def get(port, path="/health"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_many_slow_clients_at_once_do_not_hold_up_the_others(chat_model):
    """Sixteen clients trickle their headers a byte at a time; every other request is
    still answered at once, and each slow one gets its 408 at the deadline."""
    with App(chat_model, limits=Limits(request_timeout=1.5)).start(port=0) as app:
        slow = []
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        start, worst = time.monotonic(), 0.0
        while time.monotonic() - start < 1.0:
            for s in slow:
                s.sendall(b"X")
            t = time.monotonic()
            assert get(app.port)[0] == 200
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.05)
        assert worst < 0.5, worst
        for s in slow:
            data = b""
            while part := s.recv(65536):
                data += part
            s.close()
            [(status, headers, body)] = replies(data)
            assert status == 408 and check_error(status, headers, body)["code"] == "request_timeout"
        assert time.monotonic() - start < 5


def test_pipelined_requests_are_answered_in_order(chat_model):
    with App(chat_model).start(port=0) as app:
        post = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {len(VALID)}\r\n\r\n".encode()
            + VALID
        )
        data = (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post + b"GET /v1/nothing HTTP/1.1\r\n\r\n"
        )
        got = replies(exchange(app.port, data), "GET")
        assert [status for status, _, _ in got] == [200, 200, 404]
        assert json.loads(got[1][2])["object"] == "chat.completion"


def test_http_1_0_is_answered_and_closed(chat_model):
    with App(chat_model).start(port=0) as app:
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")  # no half-close: the server closes
        data = b""
        while part := sock.recv(65536):
            data += part
        sock.close()
        [(status, _, body)] = replies(data)
        assert status == 200 and json.loads(body)["object"] == "list"


def test_stop_with_open_connections_leaves_nothing_running(chat_model):
    before = set(threading.enumerate())
    app = App(chat_model).start(port=0)
    idle = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    idle.request("GET", "/health")
    assert idle.getresponse().read()  # kept alive, idle
    half = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.1)
    start = time.monotonic()
    app.stop()
    assert time.monotonic() - start < 3
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
    half.close()
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", app.port), timeout=1).close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(chat_model):
    with App(chat_model, limits=Limits(idle_timeout=0.5)).start(port=0) as app:
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=5)
        start = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, with nothing said
        assert 0.4 < time.monotonic() - start < 3
        sock.close()
        assert get(app.port, "/v1/models/")[0] == 200  # a trailing slash is the same path


def _ask_and_never_read(app, path: str, body: dict):
    """A client with tiny buffers on both ends sends one request and never reads: the kernel
    holds little of the answer, the rest stays queued in the server. (socket, the server's
    open connections)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", app.port))
    connections = app._server.server_state.connections
    deadline = time.monotonic() + 5
    while not connections and time.monotonic() < deadline:
        time.sleep(0.01)
    [conn] = connections
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock, connections


def test_a_client_that_stops_reading_its_answer_is_dropped(chat_model):
    """A big answer (2048 embeddings, ~3 MB of JSON) to a client that never reads: once
    nothing has left the buffer for request_timeout, the connection is dropped."""
    with App(chat_model, limits=Limits(request_timeout=1.0)).start(port=0) as app:
        body = {"model": "model", "input": ["hello world"] * 2048, "encoding_format": "float"}
        sock, connections = _ask_and_never_read(app, "/v1/embeddings", body)
        deadline = time.monotonic() + 30
        while connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not connections  # dropped, while the client still has not read a byte
        assert get(app.port)[0] == 200
        sock.close()


def test_a_client_that_stops_reading_a_stream_is_dropped_and_frees_the_model(chat_model):
    with App(chat_model, limits=Limits(request_timeout=1.0)).start(port=0) as app:
        saved, chat_model.stop_ids = chat_model.stop_ids, set()  # a long answer, no EOS
        try:
            body = {"model": "model", "messages": HELLO, "max_tokens": 900, "stream": True}
            sock, connections = _ask_and_never_read(app, "/v1/chat/completions", body)
            deadline = time.monotonic() + 60
            while connections and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not connections  # dropped, not a byte read
            assert not app.engine.active  # its answer was stopped
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
            conn.request("POST", "/v1/chat/completions", VALID)
            assert conn.getresponse().status == 200 and time.monotonic() - start < 5
            conn.close()
            sock.close()
        finally:
            chat_model.stop_ids = saved
