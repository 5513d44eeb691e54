"""One HTTP connection: requests read within their bounds, routed, and answered as JSON.

Every answer, http.server's own refusals included, is JSON in OpenAI's shape. A request is
read against `app.limits` (studio/serve/limits.py) before anything else happens to it;
generation runs one request at a time under the model's lock; a streamed answer is
server-sent events in chunked transfer encoding.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from studio.core.errors import StudioError
from studio.core.generation import PromptTooLong
from studio.serve import protocol as api
from studio.serve.limits import (
    DeadlineReader,
    HeaderBudget,
    body_length,
    parse_json,
    prompt_floor,
    read_body,
)

if TYPE_CHECKING:
    from studio.serve.app import App

log = logging.getLogger("studio.serve")
LINGER_S = 5.0
"""After an error answered before the body was read, how long that body is taken in and
dropped, so the client reads the answer instead of a reset connection."""
GET_ROUTES = {"/v1/models": "_list_models", "/health": "_health"}
POST_ROUTES = {"/v1/chat/completions": "_chat", "/v1/completions": "_completion"}


class Handler(BaseHTTPRequestHandler):
    """One connection. Every answer, http.server's own refusals included, is JSON in OpenAI's
    shape; nothing a client sends is read past the bounds in `app.limits`."""

    app: App  # set on a subclass per App
    protocol_version = "HTTP/1.1"
    server_version = "studio"
    default_request_version = "HTTP/1.0"  # so a bare "GET /" still gets a status line

    def setup(self):
        super().setup()
        self.rfile.close()  # replaced by one whose reads keep to the request's deadline
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader, 65536)
        self.linger = 0.0  # seconds to drain the input for on closing
        with self.app._guard:
            self.app._open.add(self.connection)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            self.linger = 0.0
            raise

    def finish(self):
        try:
            if self.linger:
                self._linger()
        finally:
            with self.app._guard:
                self.app._open.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    # -- reading a request within its bounds --------------------------------------------

    def handle_one_request(self):
        limits, conn = self.app.limits, self.connection
        self.reader.deadline, self.linger = None, 0.0
        self.responded = self.streaming = self.body_read = False
        conn.settimeout(limits.idle_timeout)
        self.server.set_idle(conn, True)  # may give its place up to a new connection
        try:
            waiting = self.rfile.peek(1)
        except OSError:  # timed out idle, or closed to make room
            waiting = b""
        finally:
            self.server.set_idle(conn, False)
        if not waiting:
            self.close_connection = True
            return
        self.reader.deadline = time.monotonic() + limits.request_timeout
        self.linger = LINGER_S  # from here an early answer may leave part of a request unread
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                self.close_connection = True
                self._error(api.ApiError(414, "the request line is longer than 65536 bytes"))
                return
            if not self.parse_request():
                return  # answered by send_error
            self._dispatch()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection, self.linger = True, 0.0
            if not self.body_read and not self.responded:
                self.linger = 1.0  # briefly: this client is slow or stalled on purpose
                conn.settimeout(1.0)
                self._error(
                    api.ApiError(
                        408,
                        f"the request did not arrive within {limits.request_timeout:g} s "
                        "(studio serve --request-timeout)",
                        code="request_timeout",
                    )
                )

    def parse_request(self):
        rfile = self.rfile
        self.rfile = HeaderBudget(rfile, self.app.limits.max_header_bytes)
        try:
            if not super().parse_request():
                return False
        finally:
            self.rfile = rfile
        if int(self.request_version[5:].split(".")[0]) < 1:  # http.server checked the digits
            version, self.close_connection = self.request_version, True
            self._error(api.bad_request(f"{version} is not supported; this server speaks HTTP/1.1"))
            return False
        return True

    def handle_expect_100(self):
        # Refuse an oversized body before the client sends it, not after.
        try:
            body_length(self.headers, self.app.limits)
        except api.ApiError as e:
            self.close_connection = True
            self._error(e)
            return False
        return super().handle_expect_100()

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, too many headers) as JSON."""
        self.close_connection = True
        if code == 431:
            limit = self.app.limits.max_header_bytes
            text = explain if str(explain).startswith("the request headers") else None
            error = api.ApiError(
                431,
                text
                or f"the request headers are too large ({explain}): at most 100 lines and "
                f"{limit} bytes in all",
                code="headers_too_large",
            )
        elif code == 505:  # the client's doing, so not a 5xx
            error = api.bad_request(f"{message}; this server speaks HTTP/1.1")
        else:
            text = str(message)
            error = api.ApiError(code, f"malformed request: {text[:300]}")
        self._error(error)

    def _linger(self) -> None:
        """Half-close, then drop what the client still sends: closing on unread input would
        reset the connection, and the client could lose the answer it was sent."""
        conn, buffer = self.connection, bytearray(65536)
        deadline = time.monotonic() + min(self.linger, self.app.limits.request_timeout)
        try:
            self.wfile.flush()
            conn.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                if not conn.recv_into(buffer):
                    break
        except OSError:
            pass

    # -- plumbing ----------------------------------------------------------------------

    def _send_json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        try:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed from the request: escape it
            data = json.dumps(obj).encode("ascii")
        self.responded = True
        if self.request_version == "HTTP/0.9":  # http.server would send no status line
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        # A HEAD answer is its headers alone (even when the request line is refused).
        if (self.command or getattr(self, "requestline", "").split(" ", 1)[0]) != "HEAD":
            self.wfile.write(data)

    def _error(self, e: api.ApiError) -> None:
        self._send_json(e.status, e.body(), e.headers)

    def _authorize(self) -> None:
        key = self.app.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(errors="replace"), key.encode()):
            raise api.ApiError(
                401,
                "Incorrect or missing API key. Send 'Authorization: Bearer KEY'.",
                code="invalid_api_key",
            )

    def _route(self):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        is_model = path.startswith("/v1/models/")
        routes = {"GET": GET_ROUTES, "POST": POST_ROUTES}.get(self.command, {})
        if path in routes:
            return getattr(self, routes[path])
        if is_model and self.command == "GET":
            return self._get_model
        allowed = [m for m, r in (("GET", GET_ROUTES), ("POST", POST_ROUTES)) if path in r]
        if is_model:
            allowed = ["GET"]
        shown = self.path if len(self.path) <= 200 else self.path[:200] + "..."
        if allowed:
            raise api.ApiError(
                405,
                f"{self.command[:20]} is not allowed on {path}; use {' or '.join(allowed)}",
                code="method_not_allowed",
                headers={"Allow": ", ".join(allowed)},
            )
        raise api.ApiError(404, f"no route {self.command[:20]} {shown}", code="not_found")

    def _body(self):
        if not self.raw_body:
            raise api.bad_request("the request needs a JSON body (sent with a Content-Length)")
        return parse_json(self.raw_body, self.app.limits)

    def _dispatch(self) -> None:
        limits = self.app.limits
        try:
            try:
                handler = self._route()
                if handler != self._health:
                    self._authorize()
                length = body_length(self.headers, limits)
                self.raw_body = read_body(self.rfile, length, limits)
            except api.ApiError:
                self.close_connection = True  # a body may be left unread: end the connection
                raise
            # Read in full: from here on, a client that stops reading the answer is dropped
            # once a write has waited request_timeout.
            self.body_read, self.reader.deadline = True, None
            self.connection.settimeout(limits.request_timeout)
            handler()
        except api.ApiError as e:
            self._error(e)
        except ConnectionError:
            self.close_connection, self.linger = True, 0.0
        except TimeoutError:
            raise  # answered (408) or dropped by handle_one_request
        except Exception as e:  # answer 500 in OpenAI's shape rather than dropping the client
            log.exception("request failed")
            if self.streaming:  # a response is under way: another one cannot follow it
                self.close_connection = True
                return
            try:
                self._error(api.ApiError(500, f"internal error: {e}", type="server_error"))
            except OSError:
                self.close_connection = True

    # -- routes ------------------------------------------------------------------------

    def _health(self):
        self._send_json(200, {"status": "ok"})

    def _list_models(self):
        self._send_json(
            200, {"object": "list", "data": [api.model_object(self.app.model_id, self.app.created)]}
        )

    def _get_model(self):
        name = self.path.split("?")[0].split("/v1/models/", 1)[1]
        self.app.check_model(name)
        self._send_json(200, api.model_object(self.app.model_id, self.app.created))

    def _chat(self):
        req = api.parse_chat(self._body())
        self.app.check_model(req.model)
        self._generate(req, lambda: self.app.model.chat(req.messages, req.settings), "chatcmpl")

    def _completion(self):
        req = api.parse_completion(self._body())
        self.app.check_model(req.model)
        self._generate(req, lambda: self.app.model.complete(req.prompt, req.settings), "cmpl")

    def _generate(self, req: api.Request, make, prefix: str) -> None:
        model = self.app.model
        rid, name = api.new_id(prefix), self.app.model_id
        context, wanted = model.context_length, req.settings.max_new_tokens
        where = "messages" if req.messages else "prompt"
        if context and req.max_tokens_given and wanted >= context:
            raise api.bad_request(
                f"max_tokens is {wanted}, but this model's context holds {context} tokens, "
                "the prompt included",
                "max_tokens",
                "context_length_exceeded",
            )
        # The lock queues requests: one generation at a time; the prompt is tokenized under
        # it too, since a fast tokenizer must not be used from two threads at once.
        with model.lock:
            try:
                if self.app.stopping.is_set():
                    raise api.ApiError(503, "the server is shutting down", type="server_error")
                floor = prompt_floor(model.tokenizer, req.text, context) if context else None
                if floor:
                    raise PromptTooLong(
                        f"the prompt is more than {floor} tokens; this model's context holds "
                        f"{context}. Shorten the conversation or start a new one."
                    )
                gen = make()
            except PromptTooLong as e:
                raise api.bad_request(str(e), where, "context_length_exceeded") from None
            except StudioError as e:
                raise api.bad_request(str(e), e.field) from None
            if context and req.max_tokens_given and gen.prompt_tokens + wanted > context:
                room = context - gen.prompt_tokens
                raise api.bad_request(
                    f"the prompt is {gen.prompt_tokens} tokens and max_tokens asks for {wanted} "
                    f"more, but this model's context holds {context}: ask for at most {room}",
                    "max_tokens",
                    "context_length_exceeded",
                )
            self.app.track(gen, True)
            try:
                if req.stream:
                    self._stream(req, gen, rid, name, prefix == "chatcmpl")
                else:
                    try:
                        for _ in gen:
                            pass
                    except StudioError as e:
                        raise api.bad_request(str(e), e.field) from None
                    if gen.finish_reason == "cancelled" and self.app.stopping.is_set():
                        raise api.ApiError(503, "the server is shutting down", type="server_error")
                    body = api.chat_response if prefix == "chatcmpl" else api.completion_response
                    self._send_json(200, body(rid, name, gen))
            finally:
                gen.stop()  # ends the loop at once if the client went away mid-stream
                self.app.track(gen, False)

    def _stream(self, req, gen, rid: str, name: str, chat: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.streaming = True

        def event(obj) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
            payload = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(payload):X}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        if chat:
            event(api.chat_chunk(rid, name, {"role": "assistant", "content": ""}))
        try:
            for piece in gen:
                event(
                    api.chat_chunk(rid, name, {"content": piece})
                    if chat
                    else api.completion_chunk(rid, name, piece)
                )
        except OSError:
            raise  # the client went away: nothing more can be sent
        except Exception as e:
            # The 200 and its headers are out, so a second response cannot follow: the error
            # goes in-band as one event in OpenAI's shape (the openai client raises it as an
            # APIError), then the stream ends properly.
            if isinstance(e, StudioError):
                error = api.bad_request(str(e), e.field)
            else:
                log.exception("streamed answer failed")
                error = api.ApiError(500, f"internal error: {e}", type="server_error")
            event(error.body())
        else:
            reason = api.finish(gen.finish_reason)
            event(
                api.chat_chunk(rid, name, {}, reason)
                if chat
                else api.completion_chunk(rid, name, "", reason)
            )
            if req.include_usage:
                make = api.chat_chunk if chat else api.completion_chunk
                event(make(rid, name, {} if chat else "", use=api.usage(gen)))
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
