"""Raw HTTP for the serve tests: bytes out, every response that came back parsed."""

from __future__ import annotations

import http.client
import io
import json
import socket

ERROR_FIELDS = {"message", "type", "param", "code"}


def check_error(status: int, headers, body: bytes, busy: bool = False) -> dict:
    """An OpenAI-shaped JSON error, and not a 5xx (but a 503 when `busy`); its "error"."""
    assert status < 500 or (busy and status == 503), (status, body[:500])
    assert headers.get("Content-Type") == "application/json", (status, headers, body[:200])
    obj = json.loads(body)
    assert set(obj) == {"error"} and set(obj["error"]) == ERROR_FIELDS, obj
    err = obj["error"]
    assert isinstance(err["message"], str) and err["message"], obj
    assert isinstance(err["type"], str) and err["type"], obj
    assert err["param"] is None or isinstance(err["param"], str), obj
    assert err["code"] is None or isinstance(err["code"], str), obj
    return err


class _Stream(io.BufferedReader):
    def close(self):  # HTTPResponse closes its input after a "Connection: close" reply
        pass


class _Replay:
    """What http.client.HTTPResponse reads from: bytes already received."""

    def __init__(self, data: bytes):
        self.stream = _Stream(io.BytesIO(data))

    def makefile(self, mode):
        return self.stream


def exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes, half-close, and return everything the server sent back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while part := sock.recv(65536):
            received += part
    except ConnectionResetError:  # what was received before it is still checked
        pass
    finally:
        sock.close()
    return received


def replies(received: bytes, method: str = "GET") -> list[tuple[int, object, bytes]]:
    """Every response in `received` as (status, headers, body); fails on bytes that are not."""
    replay, out = _Replay(received), []
    while replay.stream.peek(1):
        resp = http.client.HTTPResponse(replay, method=method)
        resp.begin()
        out.append((resp.status, resp.headers, resp.read()))
    return out
