"""The listening socket: one thread per connection, up to a cap, and nothing piling up past it.

ThreadingHTTPServer alone starts a thread for every connection it accepts, so a flood of
connections (or of clients that connect and never finish a request) grows threads without
bound. Here at most `max_connections` are served at once. When the cap is reached, a
connection that is only waiting idle for its next keep-alive request gives its place up
(the client opens a new one when it needs it, as HTTP clients do); when none is idle, the
newcomer is answered 503 at once from the accepting thread, in OpenAI's error shape with a
Retry-After, and no thread is started for it.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer

from studio.serve.errors import ApiError

log = logging.getLogger("studio.serve")
LINGER_S = 1.0
"""How long a refused connection is kept half-open to take in the request it was sending
(closing on unread data would reset the connection before the client reads the 503)."""
MAX_LINGERING = 256


def refusal(limit: int) -> bytes:
    body = json.dumps(
        ApiError(
            503,
            f"the server is busy: it is serving its limit of {limit} connections; retry "
            "shortly (studio serve --max-connections raises the limit)",
            type="server_error",
            code="too_many_connections",
        ).body()
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Server(ThreadingHTTPServer):
    # Join handler threads on close (the tests check no thread is left behind).
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: a burst of clients is accepted, not dropped

    def __init__(self, address, handler, max_connections: int):
        self.max_connections = max_connections
        self.active = 0
        self.idle: set[socket.socket] = set()
        self.lingering: list[tuple[socket.socket, float]] = []
        self.guard = threading.Lock()
        self._refusal = refusal(max_connections)
        super().__init__(address, handler)

    # -- the cap -----------------------------------------------------------------------

    def set_idle(self, conn: socket.socket, idle: bool) -> None:
        with self.guard:
            (self.idle.add if idle else self.idle.discard)(conn)

    def _make_room(self) -> bool:
        """Under the guard: close one idle keep-alive connection, if there is one."""
        for conn in list(self.idle):
            self.idle.discard(conn)
            # A request that has just arrived on it makes it not idle: leave that one be.
            # (select, not recv(MSG_DONTWAIT): Python waits out a socket's timeout first.)
            try:
                if select.select([conn], [], [], 0)[0]:
                    continue
            except (OSError, ValueError):
                continue
            try:
                conn.shutdown(socket.SHUT_RDWR)  # its thread wakes to an end of file and ends
            except OSError:
                continue
            return True
        return False

    def process_request(self, request, client_address):
        with self.guard:
            admitted = self.active < self.max_connections or self._make_room()
            if admitted:
                self.active += 1
        if not admitted:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self.guard:
                self.active -= 1
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.guard:
                self.active -= 1

    def _refuse(self, request: socket.socket) -> None:
        log.info("refused a connection: %d connections already served", self.max_connections)
        try:
            request.setblocking(False)
            request.send(self._refusal)  # a few hundred bytes: a fresh socket's buffer takes them
            request.shutdown(socket.SHUT_WR)
        except OSError:
            request.close()
            return
        if len(self.lingering) >= MAX_LINGERING:
            request.close()
        else:
            self.lingering.append((request, time.monotonic() + LINGER_S))

    def service_actions(self):
        """Called by serve_forever between polls: drain refused connections, close the done."""
        keep, now = [], time.monotonic()
        for sock, deadline in self.lingering:
            done = now > deadline
            try:
                while not done:
                    done = not sock.recv(65536)  # an end of file: the client has closed
            except BlockingIOError:
                pass
            except OSError:
                done = True
            if done:
                sock.close()
            else:
                keep.append((sock, deadline))
        self.lingering = keep

    def server_close(self):
        for sock, _ in self.lingering:
            sock.close()
        self.lingering = []
        super().server_close()

    def handle_error(self, request, client_address):
        # A client that hangs up (reset, broken pipe) is routine for a server: one log line,
        # not a traceback on the console. Anything else is still reported in full.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.info("%s hung up", client_address[0])
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6
