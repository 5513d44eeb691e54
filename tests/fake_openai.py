"""A fake OpenAI-compatible server on loopback for tests of the clients (judge, generation).

`JSONHandler` answers with `send_json`; `serving(handler)` runs it in a thread, yields the
base URL (`http://127.0.0.1:PORT/v1`) and stops and joins the thread afterwards.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    def body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply(self, text: str) -> None:
        """A chat completion whose message is `text`."""
        self.send_json(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler: type[JSONHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not thread.is_alive()
