"""An OpenAI-compatible HTTP server on the standard library (ThreadingHTTPServer).

Each connection gets a thread, up to a cap (server.py); generation itself runs one request
at a time under the model's lock, so concurrent clients queue and every one is answered.
HTTP/1.1 with keep-alive (the openai client reuses connections); streamed answers use
chunked transfer encoding with server-sent events (handler.py). Every request is held to
the bounds in `Limits` (limits.py). `stop()` cancels running answers, closes idle
keep-alive connections and joins every thread, so nothing is left running.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time

from studio.core.errors import StudioError
from studio.serve import protocol as api
from studio.serve.handler import Handler
from studio.serve.limits import Limits
from studio.serve.server import Server, Server6


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


class App:
    """The server around one loaded ChatModel. `run()` blocks; `start()` serves on a thread."""

    def __init__(
        self,
        model,
        *,
        api_key: str | None = None,
        model_id: str | None = None,
        limits: Limits | None = None,
    ):
        self.model = model
        self.limits = limits or Limits()
        self.api_key = api_key or None
        self.model_id = model_id or model.name
        # Clients may also name the model by the paths it was loaded from.
        self.aliases = {self.model_id, model.name, model.base_path, model.adapter_path} - {""}
        self.created = int(time.time())
        self.host = ""
        self.port = 0
        self._server: Server | None = None
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
        cls = Server6 if ":" in host else Server
        handler = type("Handler", (Handler,), {"app": self})
        try:
            self._server = cls((host.strip("[]"), port), handler, self.limits.max_connections)
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
                f"The model '{name[:200]}' does not exist; this server has '{self.model_id}'.",
                param="model",
                code="model_not_found",
            )

    def track(self, gen, running: bool) -> None:
        with self._guard:
            (self._running.add if running else self._running.discard)(gen)
