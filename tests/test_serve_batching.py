"""Requests that arrive together are generated as one batch, and each answer is the text it
would have been alone; /v1/embeddings through the official client."""

from __future__ import annotations

import base64
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")

from studio.core.generation import GenerationSettings  # noqa: E402
from studio.core.infer import load_chat_model  # noqa: E402
from studio.serve import App  # noqa: E402

PROMPTS = [
    "Hello, how are you today?",
    "What is the capital of Peru?",
    "Write a haiku about the sea, please.",
    "hi",
    "Explain, in a long and careful answer, why the sky looks blue on a clear afternoon.",
    "Count to ten.",
]


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    return load_chat_model(str(tiny_model))


@pytest.fixture(scope="module")
def server(chat_model):
    before = set(threading.enumerate())
    with App(chat_model).start(port=0) as app:
        yield app
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    yield c
    c.close()


def alone(chat_model, i: int, max_tokens: int, stop=None, chat=True):
    settings = GenerationSettings(temperature=0, max_new_tokens=max_tokens, stop=stop or [])
    if chat:
        gen = chat_model.chat([{"role": "user", "content": PROMPTS[i]}], settings)
    else:
        gen = chat_model.complete(PROMPTS[i], settings)
    return "".join(gen), gen


def together(server, chat_model, calls):
    """Run `calls` (functions of nothing) so that they all reach the engine before it takes
    any: the model's lock is held until every request is queued. Their results, and how many
    batches the engine made of them."""
    engine, batches = server.engine, server.engine.batches
    with ThreadPoolExecutor(len(calls)) as pool:
        chat_model.lock.acquire()
        try:
            futures = [pool.submit(c) for c in calls]
            deadline = time.monotonic() + 30
            # Every request submitted; one job taken (the thread waits for the lock), the
            # others queued behind it.
            while time.monotonic() < deadline and (
                len(engine.active) < len(calls) or engine.queue.qsize() != len(calls) - 1
            ):
                time.sleep(0.01)
            assert len(engine.active) == len(calls) and engine.queue.qsize() == len(calls) - 1
        finally:
            chat_model.lock.release()
        results = [f.result() for f in futures]
    return results, engine.batches - batches


def test_greedy_requests_arriving_together_are_one_batch_with_the_same_answers(
    server, client, chat_model
):
    cases = [  # (prompt, max_tokens, stop strings, chat or completion, streamed)
        (0, 16, None, True, False),
        (1, 9, None, True, True),
        (2, 24, None, False, False),
        (3, 5, None, True, False),
        (4, 20, None, False, True),
        (5, 12, None, True, True),
    ]
    # A stop string that the answer alone reaches, so one row stops early on its own.
    text5, _ = alone(chat_model, 5, 12)
    cut = text5[len(text5) // 2 : len(text5) // 2 + 2]
    if cut.strip():
        cases[5] = (5, 12, [cut], True, True)

    def call(i, max_tokens, stop, chat, stream):
        def ask():
            kwargs = {"model": "model", "temperature": 0, "max_tokens": max_tokens, "stop": stop}
            if chat:
                kwargs["messages"] = [{"role": "user", "content": PROMPTS[i]}]
                if stream:
                    chunks = client.chat.completions.create(
                        **kwargs, stream=True, stream_options={"include_usage": True}
                    )
                    chunks = list(chunks)
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    return text, chunks[-1].usage.completion_tokens
                r = client.chat.completions.create(**kwargs)
                return r.choices[0].message.content, r.usage.completion_tokens
            kwargs["prompt"] = PROMPTS[i]
            if stream:
                chunks = list(
                    client.completions.create(
                        **kwargs, stream=True, stream_options={"include_usage": True}
                    )
                )
                text = "".join(c.choices[0].text for c in chunks if c.choices)
                return text, chunks[-1].usage.completion_tokens
            r = client.completions.create(**kwargs)
            return r.choices[0].text, r.usage.completion_tokens

        return ask

    results, batches = together(server, chat_model, [call(*c) for c in cases])
    assert batches == 1
    for (i, max_tokens, stop, chat, _), (text, tokens) in zip(cases, results, strict=True):
        want, gen = alone(chat_model, i, max_tokens, stop, chat)
        assert text == want, (i, text, want)
        assert tokens == gen.completion_tokens


def test_sampled_requests_are_not_batched_and_keep_their_seed(server, client, chat_model):
    hello = [{"role": "user", "content": PROMPTS[0]}]
    settings = GenerationSettings(temperature=0.9, top_k=0, top_p=1.0, max_new_tokens=10, seed=7)
    want = "".join(chat_model.chat(hello, settings))

    def ask():
        r = client.chat.completions.create(
            model="model", messages=hello, temperature=0.9, top_p=1.0, max_tokens=10, seed=7,
            extra_body={"top_k": 0},
        )  # fmt: skip
        return r.choices[0].message.content

    results, batches = together(server, chat_model, [ask] * 4)
    assert batches == 0 and results == [want] * 4


def test_a_batched_client_leaving_frees_its_row(server, chat_model):
    """Streamed rows in one batch: one client goes away after its first piece; the rest
    are answered in full and the model is free again at once."""
    import http.client
    import json

    saved, chat_model.stop_ids = chat_model.stop_ids, set()  # long answers, not ended by EOS
    try:
        body = {"model": "model", "temperature": 0, "max_tokens": 200, "stream": True}

        def leaver():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps({**body, "messages": [{"role": "user", "content": "hi"}]}),
            )
            resp = conn.getresponse()
            resp.read1(10)
            conn.close()
            return "left"

        def stayer():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            data = {**body, "max_tokens": 30, "messages": [{"role": "user", "content": "yo"}]}
            conn.request("POST", "/v1/chat/completions", json.dumps(data))
            text = conn.getresponse().read().decode()
            conn.close()
            return text

        start = time.monotonic()
        results, batches = together(server, chat_model, [leaver, stayer])
        assert batches == 1 and results[0] == "left" and results[1].endswith("data: [DONE]\n\n")
        assert time.monotonic() - start < 30
    finally:
        chat_model.stop_ids = saved


def test_a_batch_too_big_for_memory_is_answered_one_at_a_time(
    server, client, chat_model, monkeypatch
):
    def no_room(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(chat_model.model, "generate", no_room, raising=False)

    def ask(i):
        return lambda: (
            client.chat.completions.create(
                model="model",
                messages=[{"role": "user", "content": PROMPTS[i]}],
                temperature=0,
                max_tokens=8,
            )
            .choices[0]
            .message.content
        )

    results, batches = together(server, chat_model, [ask(0), ask(1), ask(2)])
    assert batches == 1
    assert results == [alone(chat_model, i, 8)[0] for i in range(3)]


# ----------------------------------------------------------------------------- embeddings


def mean_hidden(chat_model, text: str) -> list[float]:
    import torch

    ids = chat_model.tokenizer(text)["input_ids"]
    with torch.inference_mode():
        out = chat_model.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0].float().mean(0).tolist()


def test_embeddings_with_the_openai_client(client, chat_model):
    texts = ["The quick brown fox", "jumps over the lazy dog, twice over"]
    r = client.embeddings.create(model="model", input=texts)  # the client asks for base64
    assert [d.index for d in r.data] == [0, 1] and r.model == "model"
    hidden = chat_model.model.config.hidden_size
    for d, text in zip(r.data, texts, strict=True):
        assert len(d.embedding) == hidden
        assert d.embedding == pytest.approx(mean_hidden(chat_model, text), abs=1e-5)
    n = sum(len(chat_model.tokenizer(t)["input_ids"]) for t in texts)
    assert r.usage.prompt_tokens == r.usage.total_tokens == n
    floats = client.embeddings.create(model="model", input=texts, encoding_format="float")
    assert [d.embedding for d in floats.data] == [d.embedding for d in r.data]  # same numbers
    packed = base64.b64encode(struct.pack(f"<{hidden}f", *r.data[1].embedding)).decode()
    raw = client.embeddings.with_raw_response.create(
        model="model", input=texts, encoding_format="base64"
    )
    assert raw.http_response.json()["data"][1]["embedding"] == packed


def test_embeddings_refusals(client, chat_model):
    for kwargs, param in (
        ({"input": []}, "input"),
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": ""}, "input"),
        ({"input": "hello " * 5000}, "input"),
        ({"input": "x", "dimensions": 8}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ):
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model="model", **kwargs)
        assert e.value.param == param, (kwargs, e.value)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="other", input="x")
