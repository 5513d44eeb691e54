"""A fake Hugging Face hub on loopback, for tests of hub downloads (no network, ever).

It serves one model repository from a local folder through the endpoints huggingface_hub
2.x calls: the model info (`GET /api/models/{repo}/revision/{rev}?blobs=true`) and the files
(`HEAD`/`GET /{repo}/resolve/{rev}/{file}` with ETag, X-Repo-Commit and Content-Length, and
Range on GET). `hub.slow = (name, bytes, seconds)` sends that file in pieces with a pause
between them, so a test can cancel mid-file. `hub.requests` records (method, path, range).

`serving_hub(...)` points huggingface_hub at it (its ENDPOINT constants, read at import from
HF_ENDPOINT, and HF_HUB_CACHE) through monkeypatch, and lifts the tests' HF_HUB_OFFLINE.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo_id: str, folder: Path, commit: str = COMMIT):
        self.repo_id, self.folder, self.commit = repo_id, Path(folder), commit
        self.files = {p.name: p.read_bytes() for p in sorted(self.folder.iterdir()) if p.is_file()}
        self.slow: tuple[str, int, float] | None = None
        self.requests: list[tuple[str, str, str]] = []
        self.url = ""

    def info(self) -> dict:
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": self.commit,
            "private": False,
            "siblings": [
                {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                for name, data in self.files.items()
            ],
        }

    def gets(self, name: str) -> int:
        """How many GET requests fetched file `name`."""
        return sum(1 for m, path, _ in self.requests if m == "GET" and path.endswith("/" + name))


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range", "")))
            info_prefix = f"/api/models/{hub.repo_id}"
            if path in (
                info_prefix,
                f"{info_prefix}/revision/main",
                f"{info_prefix}/revision/{hub.commit}",
            ):
                data = json.dumps(hub.info()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                return
            for rev in ("main", hub.commit):
                prefix = f"/{hub.repo_id}/resolve/{rev}/"
                if path.startswith(prefix) and path[len(prefix) :] in hub.files:
                    return self._file(path[len(prefix) :], head)
            self._not_found()

        def _file(self, name: str, head: bool) -> None:
            data = hub.files[name]
            start = 0
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[len("bytes=") : -1])
            self.send_response(206 if start else 200)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", hub.commit)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            body = data[start:]
            piece, pause = len(body), 0.0
            if hub.slow is not None and hub.slow[0] == name:
                _, piece, pause = hub.slow
            try:
                for i in range(0, len(body), piece):
                    self.wfile.write(body[i : i + piece])
                    self.wfile.flush()
                    if pause:
                        time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (cancelled)
                self.close_connection = True

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a cancelled client hung up: expected
        pass


@contextlib.contextmanager
def serving_hub(hub: FakeHub, monkeypatch, cache: Path) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    server = _QuietServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
