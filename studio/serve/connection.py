"""One connection, on uvicorn's h11 protocol, held to `Limits` before the app sees a request.

uvicorn and h11 parse HTTP, frame bodies (chunked included), keep connections alive and
pipeline; what they do not do is bound a client. This subclass adds, on the event loop:

- the request head is read within its bounds (request line 64 KiB: 414; headers
  `max_header_bytes` and 100 lines: 431; HTTP/1.0 or 1.1 only: 400) and its body framing
  checked (Content-Length against `max_body_bytes`: 413 before a byte of the body is read,
  so no "100 Continue" is sent for it; Transfer-Encoding other than chunked, both framings,
  Content-Encoding: 400 / 415) before h11 is given it;
- a deadline for the whole request (`request_timeout` from its first byte to the end of its
  body): a client trickling its headers a byte at a time (slowloris) gets a 408, and the
  event loop goes on serving everyone else meanwhile;
- at most `max_connections` at once: an idle keep-alive connection gives its place up to a
  newcomer, else the newcomer gets a 503 with Retry-After at once;
- every refusal is JSON in OpenAI's shape, h11's own included; after an early answer the
  rest of the request is drained for a while (half-closed, read and dropped) so the client
  reads the answer rather than a reset connection.
"""

from __future__ import annotations

import email.message
import http
import json
import logging
import re
import sys

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from studio.serve.errors import ApiError, bad_request
from studio.serve.limits import Limits, body_length

log = logging.getLogger("studio.serve")
MAX_LINE = 65536
"""Longest request line, its line ending included (414 beyond it)."""
MAX_HEADER_LINES = 100
LINGER_S = 5.0
"""After an answer sent before the request was read whole, how long the rest is drained."""
REFUSED_LINGER_S = 1.0
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(r"HTTP/([0-9]{1,9})\.([0-9]{1,9})")


class _Log:
    """uvicorn's messages about a connection, on our logger; a client's malformed request
    is routine for a server, so its warning is logged at info level."""

    level = logging.INFO  # uvicorn checks it before its trace messages

    def __getattr__(self, name):
        return getattr(log, name)

    def warning(self, msg, *args, **kwargs):
        log.info(msg, *args, **kwargs)


def error_bytes(error: ApiError, head_only: bool = False) -> bytes:
    """A whole HTTP response for `error`, closing the connection."""
    body = json.dumps(error.body()).encode()  # ASCII: a lone surrogate is escaped too
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    headers.update(error.headers)
    headers["Connection"] = "close"
    phrase = http.HTTPStatus(error.status).phrase
    head = f"HTTP/1.1 {error.status} {phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + (b"" if head_only else body)


class Gate:
    """What the connections of one server share: the limits and who is being served."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.served: set[Connection] = set()
        self.busy = error_bytes(
            ApiError(
                503,
                f"the server is busy: it is serving its limit of {limits.max_connections} "
                "connections; retry shortly (studio serve --max-connections raises the limit)",
                type="server_error",
                code="too_many_connections",
                headers={"Retry-After": "1"},
            )
        )

    def admit(self, conn: Connection) -> bool:
        if len(self.served) >= self.limits.max_connections and not self._make_room():
            return False
        self.served.add(conn)
        return True

    def _make_room(self) -> bool:
        for other in list(self.served):
            if other.idle():
                other.transport.close()  # its client opens a new one when it needs it
                self.served.discard(other)
                return True
        return False


class Connection(H11Protocol):
    gate: Gate  # set on a subclass per server

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logger = _Log()
        self.limits = self.gate.limits
        self.max_event = self.config.h11_max_incomplete_event_size
        self.head = bytearray()
        """The request head being read, before h11 is given it."""
        self.method = ""
        self.closing = False
        """Answered for good: whatever else arrives is dropped until the connection closes."""
        self.peer_eof = False
        self.deadline = None
        self.closer = None
        self.stall = None

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.gate.admit(self):
            log.info("refused a connection: %d connections already served", len(self.gate.served))
            self.transport.write(self.gate.busy)
            self._close_soon(REFUSED_LINGER_S)
        else:
            self._wait_idle()

    def _wait_idle(self) -> None:
        """uvicorn times idle connections out only after an answer; a new one too."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc) -> None:
        self.gate.served.discard(self)
        for timer in (self.deadline, self.closer, self.stall):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """Between requests on a kept-alive connection, with nothing of the next one yet."""
        return (
            not self.closing
            and not self.head
            and self.conn.our_state is h11.IDLE
            and self.conn.their_state is h11.IDLE
            and not self.conn.trailing_data[0]
            and not self.transport.is_closing()
        )

    def shutdown(self) -> None:
        if self.closing or self.head or self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        elif self.conn.their_state is h11.SEND_BODY and not self.cycle.response_started:
            # Its body would keep the server waiting: answer now rather than at the timeout.
            self._refuse(ApiError(503, "the server is shutting down", type="server_error"))
            self.transport.close()  # no lingering: the server is going
        else:
            self.cycle.keep_alive = False  # closes once its answer is out

    def _close_soon(self, linger: float) -> None:
        """Half-close (the answer is out), drop what still comes, close after `linger`."""
        self.closing = True
        self.head.clear()
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.closer = self.loop.call_later(linger, self.transport.close)

    def _refuse(self, error: ApiError, linger: float = LINGER_S) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is under way: nothing else can follow it
                self.transport.close()
                return
            cycle.disconnected = True  # the app's own answer, if any, is dropped
            cycle.message_event.set()
        self.transport.write(error_bytes(error, head_only=self.method == "HEAD"))
        self._close_soon(min(linger, self.limits.request_timeout))

    # -- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # drained and dropped
        self._unset_keepalive_if_required()
        if self.head or self.idle():
            self._read_head(data)
        else:
            self.conn.receive_data(data)
            self.handle_events()
        self._check_request_done()

    def eof_received(self):
        if self.closing or self.head:
            return None  # the transport closes
        if self.conn.their_state is h11.SEND_BODY:  # the body ends early: h11 answers a 400
            self.conn.receive_data(b"")
            self.handle_events()
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            self.peer_eof = True  # half-closed after its request: answer it, then close
            return True
        return None

    def on_response_complete(self) -> None:
        # A request pipelined behind this one is read like any other (h11 would parse it
        # from its own buffer, past the bounds): a fresh h11 connection, and the bytes anew.
        pipelined = b""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            pipelined = bytes(self.conn.trailing_data[0])
            if pipelined:
                self.conn = h11.Connection(h11.SERVER, self.max_event)
        super().on_response_complete()
        if pipelined and not self.transport.is_closing():
            self.data_received(pipelined)
        if self.peer_eof and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()
        buffered = self.transport.get_write_buffer_size()
        if buffered and self.stall is None:  # closing too: close() waits for the flush
            self.stall = self.loop.call_later(self.limits.request_timeout, self._stalled, buffered)

    def _stalled(self, before: int) -> None:
        """Drop a client that stopped reading its answer: none of what was buffered left in
        `request_timeout` (a slow reader that keeps reading is left alone)."""
        self.stall = None
        left = self.transport.get_write_buffer_size()
        if not left:
            return
        if left >= before:
            log.info("dropped a client that stopped reading its answer")
            self.transport.abort()
            return
        self.stall = self.loop.call_later(self.limits.request_timeout, self._stalled, left)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:
            # For the app: the transport, to drop a client that stops reading its answer.
            self.cycle.scope.setdefault("studio.connection", self)

    def send_400_response(self, msg: str) -> None:
        """h11 found the request malformed (uvicorn's answer would be plain text)."""
        detail = str(sys.exc_info()[1] or msg)
        self._refuse(bad_request(f"malformed request: {detail[:300]}"))

    def _check_request_done(self) -> None:
        if (
            self.deadline is not None
            and not self.head
            and self.conn.their_state is not h11.SEND_BODY
        ):
            self.deadline.cancel()
            self.deadline = None

    def _timed_out(self) -> None:
        self.deadline = None
        cycle = self.cycle
        if not self.head and cycle is not None and cycle.response_started:
            self.transport.close()  # answered already; the rest of the body is not waited for
            return
        self._refuse(
            ApiError(
                408,
                f"the request did not arrive within {self.limits.request_timeout:g} s "
                "(studio serve --request-timeout)",
                code="request_timeout",
            ),
            linger=1.0,  # briefly: this client is slow or stalled on purpose
        )

    def _read_head(self, data: bytes) -> None:
        if not self.head:
            data = data.lstrip(b"\r\n")  # blank lines before a request are allowed
            if not data:
                self._wait_idle()
                return
            self.deadline = self.loop.call_later(self.limits.request_timeout, self._timed_out)
            self.method = ""
        self.head += data
        if b"\n" not in data and len(self.head) <= min(MAX_LINE, self.limits.max_header_bytes):
            return  # no line has ended and no bound is passed: nothing to decide (a trickle)
        try:
            head = self._complete_head()
        except ApiError as e:
            self._refuse(e)
            return
        if head is not None:
            self.conn.receive_data(head)
            self.handle_events()

    def _complete_head(self) -> bytes | None:
        """The request head and what followed it, once it is all here and within bounds."""
        buf, limit = self.head, self.limits.max_header_bytes
        line_end = buf.find(b"\n", 0, MAX_LINE + 1)
        if line_end < 0:
            if len(buf) > MAX_LINE:
                raise ApiError(414, f"the request line is longer than {MAX_LINE} bytes")
            return None
        self.method = buf[: min(line_end, 20)].split(b" ", 1)[0].decode("latin-1")
        found = _BLANK_LINE.search(
            buf, line_end - 1 if line_end and buf[line_end - 1] == 13 else line_end
        )
        end = found.end() if found else len(buf)
        headers = buf[line_end + 1 : end]
        if len(headers) > limit:
            raise ApiError(
                431,
                f"the request headers are larger than {limit} bytes in all",
                code="headers_too_large",
            )
        if headers.count(b"\n") > MAX_HEADER_LINES + 1:
            raise ApiError(
                431,
                f"the request headers are too large (got more than {MAX_HEADER_LINES} headers): "
                f"at most {MAX_HEADER_LINES} lines and {limit} bytes in all",
                code="headers_too_large",
            )
        if found is None:
            return None
        line = bytes(buf[:line_end]).rstrip(b"\r")
        rest = bytes(buf[end:])
        self.head.clear()
        version = self._check_line(line.decode("latin-1"))
        fields = email.message.Message()
        for raw in bytes(headers).decode("latin-1").splitlines():
            if raw.strip():
                name, sep, value = raw.partition(":")
                if not sep:
                    raise bad_request(
                        f"malformed request: a header line has no colon: {raw[:100]!r}"
                    )
                fields[name.strip()] = value.strip()
        body_length(fields, self.limits)  # refuses a body that cannot be read, before h11
        if version == (1, 1) and fields.get("Host") is None:
            # h11 insists on a Host header from HTTP/1.1 clients; nothing here uses it.
            headers = b"Host: localhost\r\n" + bytes(headers)
        return line + b"\r\n" + bytes(headers) + rest

    def _check_line(self, line: str) -> tuple[int, int]:
        words = line.split()
        if len(words) == 2:
            raise bad_request("HTTP/0.9 is not supported; this server speaks HTTP/1.1")
        if len(words) != 3:
            raise bad_request(f"malformed request: bad request syntax ({line[:100]!r})")
        found = _VERSION.fullmatch(words[2])
        if not found:
            raise bad_request(f"malformed request: bad request version ({words[2][:40]!r})")
        version = (int(found[1]), int(found[2]))
        if version < (1, 0) or version >= (2, 0):
            raise bad_request(f"{words[2]} is not supported; this server speaks HTTP/1.1")
        return version
