"""An OpenAI-compatible HTTP server on FastAPI and uvicorn.

uvicorn serves HTTP/1.1 on one event loop (keep-alive, chunked bodies, pipelining) through
connection.py, which holds every request to `Limits` first; the routes are a FastAPI app
(routes.py); generation runs on one engine thread that batches requests arriving together
(engine.py), so concurrent clients share the model and every one is answered. `stop()`
cancels running answers, lets their clients read how they ended, closes every connection
and joins both threads, so nothing is left running.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time

import uvicorn

# Named to uvicorn by string below; imported here too so a bundler (PyInstaller) sees them.
import uvicorn.lifespan.off  # noqa: F401
import uvicorn.loops.asyncio  # noqa: F401

from studio.core.errors import StudioError
from studio.serve import protocol as api
from studio.serve.connection import MAX_LINE, Connection, Gate
from studio.serve.engine import Engine
from studio.serve.limits import Limits
from studio.serve.routes import Routes

BACKLOG = 128
"""The listen backlog: a burst of clients is accepted, not dropped."""


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


class Server(uvicorn.Server):
    """uvicorn's server, which stops the answers under way before it waits for them."""

    def __init__(self, config, app: App):
        super().__init__(config)
        self.studio = app

    async def shutdown(self, sockets=None) -> None:
        self.studio.stopping.set()
        self.studio.engine.cancel_all()
        await super().shutdown(sockets)


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
        self.stopping = threading.Event()
        self.engine = Engine(model, self.stopping)
        self._socket: socket.socket | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def bind(self, host: str = "127.0.0.1", port: int = 8000) -> App:
        """Open the listening socket (port 0 picks a free port; read it from `.port`)."""
        check_host(host, self.api_key)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), port))
            sock.listen(BACKLOG)
        except OSError as e:
            sock.close()
            raise StudioError(
                f"serve: cannot listen on {host}:{port}: {e.strerror or e}", field="port"
            ) from None
        self._socket = sock
        self.host, self.port = host, sock.getsockname()[1]
        self.stopping.clear()
        gate = Gate(self.limits)
        config = uvicorn.Config(
            Routes(self).build(),
            http=type("Connection", (Connection,), {"gate": gate}),
            ws="none",
            loop="asyncio",  # the transports connection.py was written against, uvloop or not
            lifespan="off",
            log_config=None,
            access_log=True,  # a line per request where logging is set up (the CLI)
            proxy_headers=False,
            server_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=self.limits.idle_timeout,
            timeout_graceful_shutdown=10,
            h11_max_incomplete_event_size=MAX_LINE + self.limits.max_header_bytes + 1024,
        )
        self._server = Server(config, self)
        return self

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve until Ctrl-C (or `stop()` from another thread)."""
        if self._server is None:
            self.bind(host, port)
        print(
            f"serving {self.model_id} at {self.url} (Ctrl-C to stop)", file=sys.stderr, flush=True
        )
        try:
            self._serve()
        except KeyboardInterrupt:
            pass

    def start(self, host: str = "127.0.0.1", port: int = 0) -> App:
        """Serve on a background thread; returns once the port is open."""
        self.bind(host, port)
        server = self._server
        self._thread = threading.Thread(target=self._serve, name="studio-serve", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            time.sleep(0.005)
        if not server.started:
            self._thread.join()
            self._thread = None
            raise StudioError("serve: the server did not start (see the log above)")
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self.stopping.set()
        self.engine.cancel_all()
        server.should_exit = True
        if self._thread is not None:  # else run() is serving on another thread and closes
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        self.engine.start()
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.stopping.set()
            self.engine.stop()
            if self._socket is not None:
                self._socket.close()
            self._socket = self._server = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_model(self, name: str) -> None:
        if name not in self.aliases:
            raise api.ApiError(
                404,
                f"The model '{name[:200]}' does not exist; this server has '{self.model_id}'.",
                param="model",
                code="model_not_found",
            )
