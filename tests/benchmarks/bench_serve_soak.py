"""Soak `studio serve`: 32 clients, a fixed count of valid, malformed and slow requests.

Runs `studio serve` as a child process on 127.0.0.1 with a tiny model built on the spot,
warms it up, then sends a bounded mix from many client threads at once: chat and
completion answers (whole and streamed), model lists; malformed bodies (bad JSON, deep
nesting, wrong types, refused and unknown fields, lone surrogates, huge prompts, bodies over
the limit, oversized headers, wrong methods, raw garbage); and slow clients (a trickled
request, a stalled body, an idle connection). Prints the requests answered, the answers by
status, every 5xx (goal: none), connections closed without an answer, and the server's
resident memory after a warm-up round of the same mix, after each quarter, and at the end
(goal: under 10% growth). Not collected by pytest; run it on a quiet machine:

    python tests/benchmarks/bench_serve_soak.py [--requests 2000] [--clients 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import ROOT, busy_cpu_s, fmt  # noqa: E402
from tests.serve_http import replies  # noqa: E402

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
MAX_BODY_MB = 1  # small, so bodies past it are cheap to send
REQUEST_TIMEOUT = 2.0  # short, so the slow clients are cut off within the run


def rss_kb(pid: int) -> dict:
    """VmRSS and Threads of a process from /proc (Linux); empty elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|Threads):\s+(.+)$", text, re.M)}


# ----------------------------------------------------------------------------- clients


def http_request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, data, headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def raw(port, data: bytes, method="POST", pause: float = 0.0, timeout=30):
    """Send bytes (with `pause` seconds before the last one), read to the end; the first
    status, or None when the server closed without an answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        if pause:
            sock.sendall(data[:-1])
            time.sleep(pause)
            data = data[-1:]
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed first (a 408, a 413)
            pass
        while part := sock.recv(65536):
            received += part
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    answers = replies(received, method) if received else []
    return answers[0][0] if answers else None


def chat(port, **extra):
    return http_request(
        port, "POST", "/v1/chat/completions", {"model": "model", "messages": HELLO, **extra}
    )


def trickle(port, request_timeout=REQUEST_TIMEOUT):
    """A slowloris: one byte at a time, never finishing the headers; the status it was given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    received = b""
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        sock.settimeout(0.2)
        deadline = time.monotonic() + 3 * request_timeout
        while not received and time.monotonic() < deadline:
            try:
                sock.sendall(b"X")
                received = sock.recv(65536)
            except TimeoutError:
                pass
        sock.settimeout(10)
        while part := sock.recv(65536):
            received += part
    except OSError:
        pass
    finally:
        sock.close()
    answers = replies(received) if received else []
    return answers[0][0] if answers else None


def idle(port):
    """Connects, says nothing for a while, leaves: no answer is owed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.5)
    sock.close()
    return "idle"


def head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


VALID = json.dumps({"model": "model", "messages": HELLO, "max_tokens": 4}).encode()
MIX = {
    # valid
    "chat": (10, lambda p: chat(p, max_tokens=8)),
    "chat stream": (6, lambda p: chat(p, max_tokens=8, stream=True)),
    "completion": (
        4,
        lambda p: http_request(
            p, "POST", "/v1/completions", {"model": "model", "prompt": "The quick", "max_tokens": 8}
        ),
    ),
    "models": (3, lambda p: http_request(p, "GET", "/v1/models")),
    "health": (2, lambda p: http_request(p, "GET", "/health")),
    # malformed
    "bad json": (3, lambda p: http_request(p, "POST", "/v1/chat/completions", b"{not json")),
    "deep nesting": (3, lambda p: http_request(p, "POST", "/v1/chat/completions", b"[" * 50_000)),
    "wrong types": (3, lambda p: chat(p, temperature="hot", max_tokens=[1])),
    "tools": (2, lambda p: chat(p, tools=[{"type": "function", "function": {"name": "f"}}])),
    "unknown field": (2, lambda p: chat(p, max_token=3)),
    "surrogate": (
        2,
        lambda p: http_request(
            p,
            "POST",
            "/v1/chat/completions",
            b'{"model": "model", "messages": [{"role": "user", "content": "\\ud800"}]}',
        ),
    ),
    "huge prompt": (
        2,
        lambda p: chat(p, messages=[{"role": "user", "content": "hello world " * 60_000}]),
    ),
    "max_tokens past context": (2, lambda p: chat(p, max_tokens=5000)),
    "body over limit": (2, lambda p: raw(p, head(2 * 1024 * 1024) + bytes(2 * 1024 * 1024))),
    "64 MiB declared": (2, lambda p: raw(p, head(64 * 1024 * 1024, "Expect: 100-continue\r\n"))),
    "huge headers": (2, lambda p: http_request(p, "GET", "/v1/models", None, {"X": "a" * 40_000})),
    "wrong method": (2, lambda p: http_request(p, "DELETE", "/v1/chat/completions")),
    # (starting with a letter: a blank first line is skipped by HTTP servers, rightly)
    "garbage": (2, lambda p: raw(p, b"G" + random.randbytes(200) + b"\r\n\r\n")),
    "http/2": (1, lambda p: raw(p, b"GET /v1/models HTTP/2.0\r\n\r\n", "GET")),
    # slow
    "trickle": (1, trickle),
    "stalled body": (1, lambda p: raw(p, head(len(VALID)) + VALID, pause=REQUEST_TIMEOUT + 0.5)),
    "idle": (1, idle),
}


# ----------------------------------------------------------------------------- the run


def start_server(model_dir: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    """`studio serve` in a child process on a free port, with these flags: (process, port)."""
    cmd = [sys.executable, "-m", "studio", "serve", "--model", str(model_dir), "--port", "0"]
    cmd += flags
    env = {**os.environ, "STUDIO_API_KEY": ""}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    for line in proc.stderr:
        if m := re.search(r"at http://127\.0\.0\.1:(\d+)/v1", line):
            # keep draining its log so a full pipe never stalls the server
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
    raise SystemExit(f"studio serve did not start (exit {proc.wait()})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from studio.core.tiny import build_model

    tmp = tempfile.TemporaryDirectory()
    model_dir = build_model(Path(tmp.name) / "model")
    proc, port = start_server(
        model_dir, "--max-body-mb", str(MAX_BODY_MB), "--request-timeout", str(REQUEST_TIMEOUT)
    )
    try:
        rng = random.Random(args.seed)
        kinds = [k for k, (w, _) in MIX.items() for _ in range(w)]
        results: dict[str, Counter] = defaultdict(Counter)
        failures: Counter = Counter()
        lock = threading.Lock()

        def one(kind: str, tally: bool = True):
            try:
                status = MIX[kind][1](port)
            except Exception as e:  # the client side failing: counted, named
                status = f"client {type(e).__name__}"
            if not tally:
                return
            with lock:
                results[kind][status] += 1
                if isinstance(status, int) and status >= 500:
                    failures[(kind, status)] += 1

        # Warm-up: a round of the same mix, so that caches and the allocator's per-thread
        # arenas reach their working size before memory is measured.
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda k: one(k, tally=False), kinds * 4))
        time.sleep(1.0)
        before = rss_kb(proc.pid)

        plan = [rng.choice(kinds) for _ in range(args.requests)]
        rss_series = []
        busy0, t0 = busy_cpu_s(), time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            for quarter in range(4):  # memory after each quarter: a plateau, or a leak's slope
                part = plan[quarter * len(plan) // 4 : (quarter + 1) * len(plan) // 4]
                list(pool.map(one, part))
                rss_series.append(rss_kb(proc.pid).get("VmRSS"))
        wall = time.perf_counter() - t0
        busy1 = busy_cpu_s()
        time.sleep(1.0)  # let the last connections close
        after = rss_kb(proc.pid)
        alive = chat(port, max_tokens=2) == 200
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()

    statuses = Counter()
    for c in results.values():
        statuses.update(c)
    answered = sum(n for s, n in statuses.items() if isinstance(s, int))
    print(
        f"studio serve soak: {args.requests} requests from {args.clients} clients in {wall:.1f} s"
    )
    cores = None if busy0 is None or busy1 is None else (busy1 - busy0) / wall
    print(f"machine busy meanwhile: {fmt(cores, '.2f')} cores (server and clients together)")
    owed = args.requests - statuses["idle"]
    print(
        f"requests answered: {answered} of the {owed} that are owed an answer "
        f"({statuses['idle']} idle connections owe none); closed without an answer: "
        f"{statuses[None]}"
    )
    print(
        "answers by status: "
        + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    )
    print("\n| kind | count | statuses |\n|---|---|---|")
    for kind in MIX:
        c = results.get(kind, Counter())
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(c.items(), key=lambda kv: str(kv[0])))
        print(f"| {kind} | {sum(c.values())} | {shown} |")
    print(
        f"\n5xx answers: {sum(failures.values())} (goal 0)"
        + "".join(f"\n  {kind}: {status} x{n}" for (kind, status), n in failures.items())
    )
    if before and after:
        growth = (after["VmRSS"] - before["VmRSS"]) / before["VmRSS"] * 100
        print(
            f"server RSS: {before['VmRSS'] / 1024:.1f} MiB after warm-up, "
            f"{after['VmRSS'] / 1024:.1f} MiB after the soak ({growth:+.1f}%, goal < 10%); "
            f"threads {before['Threads']} -> {after['Threads']}"
        )
        shown = ", ".join(fmt(kb / 1024 if kb else None) for kb in rss_series)
        print(f"server RSS after each quarter of the soak: {shown} MiB")
    print(f"still serving afterwards: {'yes' if alive else 'NO'}")
    return 0 if not failures and alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
