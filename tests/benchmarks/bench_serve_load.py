"""Load on `studio serve`: latency and throughput under 32 clients, the gain from batching,
and slow clients that must not hold anyone up.

Runs `studio serve` as a child process on 127.0.0.1 with a small random model built on the
spot (a Llama, 4 layers of width 256 by default: big enough that a step costs more than the
HTTP around it, small enough for a CPU), then measures three things:

1. load: 32 clients, each on its own keep-alive connection, send 4 chat requests one after
   the other (greedy, 32 tokens each; half streamed). Every request must be answered 200
   (goal: none lost); prints p50/p99 latency, requests/s and generated tokens/s.
2. batching: the same 8 greedy requests one at a time, then from 8 clients at once; the
   ratio of their throughputs is the gain (and the answers must be the same text).
3. slowloris: 16 clients trickle their headers a byte every 0.2 s while a normal client
   keeps asking; its latency beside theirs against its latency alone, and every slow client
   must get a 408 at the request timeout.

Not collected by pytest; run it on a quiet machine (it says how busy the machine was):

    python tests/benchmarks/bench_serve_load.py [--clients 32] [--per-client 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import busy_cpu_s, fmt  # noqa: E402
from tests.benchmarks.bench_serve_soak import start_server  # noqa: E402
from tests.benchmarks.bench_serve_soak import trickle as trickle_headers  # noqa: E402

REQUEST_TIMEOUT = 3.0
PROMPTS = [
    "Hello, how are you today?",
    "What is the capital of Peru?",
    "Write a haiku about the sea.",
    "Explain why the sky is blue.",
    "Count to ten, slowly.",
    "Name three colours.",
    "What is two plus two?",
    "Tell me a short story about a cat.",
]


def ask(conn: http.client.HTTPConnection, i: int, tokens: int, stream: bool = False):
    """One greedy chat request on `conn`: (status, text, completion tokens, seconds)."""
    body = {
        "model": "model",
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body))
    resp = conn.getresponse()
    data = resp.read()
    took = time.perf_counter() - start
    if resp.status != 200:
        return resp.status, "", 0, took
    if not stream:
        obj = json.loads(data)
        return 200, obj["choices"][0]["message"]["content"], obj["usage"]["completion_tokens"], took
    events = [json.loads(e[6:]) for e in data.decode().split("\n\n") if e[6:] not in ("", "[DONE]")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    return 200, text, events[-1]["usage"]["completion_tokens"], took


def connection(port) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=120)


def load(port, clients: int, per_client: int, tokens: int) -> dict:
    def client(c: int):
        conn, out = connection(port), []
        try:
            for k in range(per_client):
                try:
                    out.append(ask(conn, c + k, tokens, stream=(c + k) % 2 == 1))
                except (OSError, http.client.HTTPException) as e:
                    out.append((f"client {type(e).__name__}", "", 0, 0.0))
                    conn.close()
                    conn = connection(port)
        finally:
            conn.close()
        return out

    busy0, t0 = busy_cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    busy1 = busy_cpu_s()
    ok = [r for r in results if r[0] == 200]
    latencies = sorted(r[3] for r in ok)
    return {
        "sent": len(results),
        "ok": len(ok),
        "lost": len(results) - len(ok),
        "p50": statistics.median(latencies) if latencies else None,
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else None,
        "rps": len(ok) / wall,
        "tps": sum(r[2] for r in ok) / wall,
        "wall": wall,
        "cores": None if busy0 is None or busy1 is None else (busy1 - busy0) / wall,
    }


def batching(port, n: int, tokens: int) -> dict:
    conn = connection(port)
    t0 = time.perf_counter()
    alone = [ask(conn, i, tokens) for i in range(n)]
    t_alone = time.perf_counter() - t0
    conn.close()

    def one(i):
        c = connection(port)
        try:
            return ask(c, i, tokens)
        finally:
            c.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        together = list(pool.map(one, range(n)))
    t_together = time.perf_counter() - t0
    return {
        "alone_s": t_alone,
        "together_s": t_together,
        "gain": t_alone / t_together,
        "same": [r[1] for r in alone] == [r[1] for r in together],
        "tokens": sum(r[2] for r in together),
    }


def slowloris(port, slow: int) -> dict:
    def latency_of_others(seconds: float) -> list[float]:
        out, end = [], time.monotonic() + seconds
        conn = connection(port)
        while time.monotonic() < end:
            out.append(ask(conn, 0, 4)[3])
        conn.close()
        return out

    alone = latency_of_others(2.0)
    answers: list[int | None] = []

    def trickle():
        answers.append(trickle_headers(port, REQUEST_TIMEOUT))

    threads = [threading.Thread(target=trickle) for _ in range(slow)]
    start = time.monotonic()
    for t in threads:
        t.start()
    beside = latency_of_others(REQUEST_TIMEOUT - 0.5)
    for t in threads:
        t.join()
    return {
        "alone_p50": statistics.median(alone),
        "beside_p50": statistics.median(beside),
        "beside_max": max(beside),
        "statuses": answers,
        "cut_after": time.monotonic() - start,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--per-client", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()

    from studio.core.tiny import build_model

    tmp = tempfile.TemporaryDirectory()
    model_dir = build_model(
        Path(tmp.name) / "model",
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        layers=args.layers,
        heads=8,
        kv_heads=4,
    )
    proc, port = start_server(model_dir, "--request-timeout", str(REQUEST_TIMEOUT))
    try:
        conn = connection(port)  # warm-up: the first steps pay for lazy set-up
        for i in range(3):
            ask(conn, i, 4)
        conn.close()
        lr = load(port, args.clients, args.per_client, args.tokens)
        br = batching(port, 8, args.tokens)
        sr = slowloris(port, 16)
        conn = connection(port)
        alive = ask(conn, 0, 2)[0] == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()

    print(
        f"studio serve load: model {args.layers} layers x {args.hidden} wide, "
        f"{os.cpu_count()} CPU cores; greedy chat requests of {args.tokens} tokens"
    )
    print(
        f"\n1. {args.clients} clients x {args.per_client} requests: {lr['ok']} of {lr['sent']} "
        f"answered 200, {lr['lost']} lost (goal 0), in {lr['wall']:.1f} s"
    )
    print(
        f"   latency p50 {fmt(lr['p50'], '.2f')} s, p99 {fmt(lr['p99'], '.2f')} s; "
        f"{lr['rps']:.1f} requests/s, {lr['tps']:.0f} tokens/s; machine busy "
        f"{fmt(lr['cores'], '.2f')} cores (server and clients together)"
    )
    print(
        f"\n2. batching: 8 requests one at a time {br['alone_s']:.2f} s, from 8 clients at once "
        f"{br['together_s']:.2f} s: {br['gain']:.2f}x the throughput; same answers: "
        f"{'yes' if br['same'] else 'NO'}"
    )
    statuses = sorted(sr["statuses"], key=str)
    print(
        f"\n3. slowloris: 16 clients trickling headers; another client's latency "
        f"{sr['alone_p50'] * 1000:.0f} ms alone, {sr['beside_p50'] * 1000:.0f} ms beside them "
        f"(worst {sr['beside_max'] * 1000:.0f} ms); slow clients answered "
        f"{', '.join(str(s) for s in statuses)} after {sr['cut_after']:.1f} s "
        f"(request timeout {REQUEST_TIMEOUT:g} s)"
    )
    print(f"\nstill serving afterwards: {'yes' if alive else 'NO'}")
    good = lr["lost"] == 0 and br["same"] and alive and all(s == 408 for s in sr["statuses"])
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
