"""An OpenAI-compatible HTTP server on the standard library (ThreadingHTTPServer).

Each connection gets a thread; generation itself runs one request at a time under the
model's lock, so concurrent clients queue and every one is answered. HTTP/1.1 with
keep-alive (the openai client reuses connections); streamed answers use chunked transfer
encoding with server-sent events. `stop()` cancels running answers, closes idle
keep-alive connections and joins every thread, so nothing is left running.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from studio.core.errors import StudioError
from studio.core.generation import PromptTooLong
from studio.serve import protocol as api

log = logging.getLogger("studio.serve")
MAX_BODY = 16 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, api_key: str | None) -> None:
    """Refuse to expose a model beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise StudioError(
            f"serve: --host {host} makes the server reachable from other machines; set "
            "--api-key KEY so only clients with the key can use it (or keep --host 127.0.0.1)",
            field="host",
        )


class _Server(ThreadingHTTPServer):
    # Join handler threads on close (the tests check no thread is left behind).
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up (reset, broken pipe) is routine for a server: one log line,
        # not a traceback on the console. Anything else is still reported in full.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.info("%s hung up", client_address[0])
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class App:
    """The server around one loaded ChatModel. `run()` blocks; `start()` serves on a thread."""

    def __init__(self, model, *, api_key: str | None = None, model_id: str | None = None):
        self.model = model
        self.api_key = api_key or None
        self.model_id = model_id or model.name
        # Clients may also name the model by the paths it was loaded from.
        self.aliases = {self.model_id, model.name, model.base_path, model.adapter_path} - {""}
        self.created = int(time.time())
        self.host = ""
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._running: set = set()
        self._guard = threading.Lock()
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def bind(self, host: str = "127.0.0.1", port: int = 8000) -> App:
        """Open the listening socket (port 0 picks a free port; read it from `.port`)."""
        check_host(host, self.api_key)
        cls = _Server6 if ":" in host else _Server
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self._server = cls((host.strip("[]"), port), handler)
        except OSError as e:
            raise StudioError(
                f"serve: cannot listen on {host}:{port}: {e.strerror or e}", field="port"
            ) from None
        self.host, self.port = host, self._server.server_address[1]
        return self

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve until Ctrl-C (or `stop()` from another thread)."""
        if self._server is None:
            self.bind(host, port)
        print(
            f"serving {self.model_id} at {self.url} (Ctrl-C to stop)", file=sys.stderr, flush=True
        )
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> App:
        """Serve on a background thread; returns once the port is open."""
        self.bind(host, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="studio-serve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
            self._close()
        else:  # run() is serving on another thread; it closes when serve_forever returns
            self._server.shutdown()

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        with self._guard:
            running = list(self._running)
        for gen in running:
            gen.stop()
        # A stopped answer ends within a token; give its handler a moment to send the reply
        # (a 503 for a whole answer, the end of the stream for a streamed one) before the
        # connections are cut, so no client sees a bare disconnect.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._guard:
                if not self._running:
                    break
            time.sleep(0.01)
        with self._guard:
            for conn in list(self._open):
                try:  # wakes a thread waiting for the next keep-alive request
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        server.server_close()  # joins the handler threads

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- used by the handler threads --------------------------------------------------

    def check_model(self, name: str) -> None:
        if name not in self.aliases:
            raise api.ApiError(
                404,
                f"The model '{name}' does not exist; this server has '{self.model_id}'.",
                param="model",
                code="model_not_found",
            )

    def track(self, gen, running: bool) -> None:
        with self._guard:
            (self._running.add if running else self._running.discard)(gen)


class _Handler(BaseHTTPRequestHandler):
    app: App
    protocol_version = "HTTP/1.1"
    server_version = "studio"
    timeout = 300  # an idle keep-alive connection is dropped after this many seconds

    def setup(self):
        super().setup()
        with self.app._guard:
            self.app._open.add(self.connection)

    def finish(self):
        with self.app._guard:
            self.app._open.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------------------

    def _send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: api.ApiError) -> None:
        self._send_json(e.status, e.body())

    def _authorize(self) -> None:
        key = self.app.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise api.ApiError(
                401,
                "Incorrect or missing API key. Send 'Authorization: Bearer KEY'.",
                code="invalid_api_key",
            )

    def _read_body(self) -> None:
        """Read the whole body first, so an early error leaves the connection reusable."""
        self.raw_body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise api.bad_request(
                "send the body with a Content-Length (chunked uploads are not supported)"
            )
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:  # rfile.read(-1) would wait for the client to close the connection
            self.close_connection = True
            raise api.bad_request("the Content-Length header is not a number of bytes")
        if length > MAX_BODY:
            self.close_connection = True
            raise api.ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        self.raw_body = self.rfile.read(length)

    def _body(self):
        if not self.raw_body:
            raise api.bad_request("the request needs a JSON body")
        try:
            return json.loads(self.raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise api.bad_request(f"the request body is not valid JSON: {e}") from None

    def _dispatch(self, routes: dict) -> None:
        self.streaming = False  # set once a streamed answer's headers are out
        try:
            if self.command == "POST":
                self._read_body()
            if not self.path.split("?")[0].startswith("/v1/") and self.path != "/health":
                raise api.ApiError(404, f"no route {self.command} {self.path}", code="not_found")
            if self.path != "/health":
                self._authorize()
            path = self.path.split("?")[0].rstrip("/")
            handler = routes.get(path)
            if handler is None and path.startswith("/v1/models/") and self.command == "GET":
                handler = self._get_model
            if handler is None:
                raise api.ApiError(404, f"no route {self.command} {self.path}", code="not_found")
            handler()
        except api.ApiError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # answer 500 in OpenAI's shape rather than dropping the client
            log.exception("request failed")
            if self.streaming:  # a response is under way: another one cannot follow it
                self.close_connection = True
                return
            try:
                self._error(api.ApiError(500, f"internal error: {e}", type="server_error"))
            except OSError:
                self.close_connection = True

    def do_GET(self):
        self._dispatch({"/v1/models": self._list_models, "/health": self._health})

    def do_POST(self):
        self._dispatch({"/v1/chat/completions": self._chat, "/v1/completions": self._completion})

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
        # The lock queues requests: one generation at a time; the prompt is tokenized under
        # it too, since a fast tokenizer must not be used from two threads at once.
        with model.lock:
            try:
                if self.app.stopping.is_set():
                    raise api.ApiError(503, "the server is shutting down", type="server_error")
                gen = make()
            except PromptTooLong as e:
                raise api.bad_request(
                    str(e), "messages" if req.messages else "prompt", "context_length_exceeded"
                ) from None
            except StudioError as e:
                raise api.bad_request(str(e), e.field) from None
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
