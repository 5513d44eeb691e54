"""A live OpenAI-compatible server on a tiny model, driven by the official `openai` client."""

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")

from studio.cli import main  # noqa: E402
from studio.core.errors import StudioError  # noqa: E402
from studio.core.generation import GenerationSettings  # noqa: E402
from studio.core.infer import load_chat_model  # noqa: E402
from studio.serve import App, create_app  # noqa: E402

KEY = "secret-key"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    return load_chat_model(str(tiny_model))


@pytest.fixture(scope="module")
def server(chat_model):
    before = set(threading.enumerate())
    app = App(chat_model, api_key=KEY).start(port=0)
    yield app
    app.stop()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)
    yield c
    c.close()


def raw(app, method, path, body=None, headers=None):
    """One plain HTTP request: (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    try:
        hdrs = {"Authorization": f"Bearer {KEY}", **(headers or {})}
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text
    finally:
        conn.close()


def expected(chat_model, messages=HELLO, max_tokens=16):
    gen = chat_model.chat(messages, GenerationSettings(temperature=0, max_new_tokens=max_tokens))
    return "".join(gen), gen


def test_model_list(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [server.model_id] == ["model"]
    assert client.models.retrieve("model").id == "model"


def test_chat_completion_matches_the_core(client, chat_model):
    text, gen = expected(chat_model)
    r = client.chat.completions.create(model="model", messages=HELLO, temperature=0, max_tokens=16)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == ("length" if gen.finish_reason == "length" else "stop")
    assert r.usage.prompt_tokens == gen.prompt_tokens
    assert r.usage.completion_tokens == gen.completion_tokens


def test_streamed_chat_completion(client, chat_model):
    text, _ = expected(chat_model)
    stream = client.chat.completions.create(
        model="model",
        messages=HELLO,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_is_server_sent_events_ending_with_done(server):
    status, text = raw(
        server,
        "POST",
        "/v1/chat/completions",
        {"model": "model", "messages": HELLO, "max_tokens": 4, "stream": True},
    )
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_completions_endpoint(client, chat_model):
    gen = chat_model.complete(
        "The quick brown", GenerationSettings(temperature=0, max_new_tokens=8)
    )
    text = "".join(gen)
    r = client.completions.create(
        model="model", prompt="The quick brown", temperature=0, max_tokens=8
    )
    assert r.choices[0].text == text and r.usage.completion_tokens == gen.completion_tokens
    streamed = client.completions.create(
        model="model", prompt="The quick brown", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="model", messages=HELLO)
    bad.close()
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    status, body = raw(server, "GET", "/v1/models", headers={"Authorization": ""})
    assert status == 401 and set(body["error"]) == {"message", "type", "param", "code"}


def test_malformed_requests_are_400(client, server):
    status, body = raw(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="model", messages=[])
    assert e.value.status_code == 400 and e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="model", messages=HELLO, temperature=-1)
    assert e.value.param == "temperature"
    status, body = raw(
        server,
        "POST",
        "/v1/chat/completions",
        {"model": "model", "messages": [{"role": "robot", "content": "x"}]},
    )
    assert status == 400 and body["error"]["param"] == "messages[0].role"


def test_prompt_longer_than_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="model", messages=[{"role": "user", "content": "word " * 2000}]
        )
    assert e.value.code == "context_length_exceeded"


def test_unknown_model_or_route_is_404(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert e.value.code == "model_not_found"
    status, body = raw(server, "GET", "/v1/nothing")
    assert status == 404 and "error" in body


def test_eight_concurrent_requests_all_answered(server, chat_model):
    text, _ = expected(chat_model, max_tokens=12)
    clients = [
        openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)
        for _ in range(8)
    ]

    def ask(i):
        c = clients[i]
        if i % 2:
            stream = c.chat.completions.create(
                model="model", messages=HELLO, temperature=0, max_tokens=12, stream=True
            )
            return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        r = c.chat.completions.create(model="model", messages=HELLO, temperature=0, max_tokens=12)
        return r.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    for c in clients:
        c.close()
    assert answers == [text] * 8  # queued one at a time, so every answer is whole and the same


def test_python_form_create_app_run(tiny_model):
    before = set(threading.enumerate())
    app = create_app(model_path=str(tiny_model))
    thread = threading.Thread(target=app.run, kwargs={"host": "127.0.0.1", "port": 0})
    thread.start()
    deadline = time.monotonic() + 30
    while not app.port and time.monotonic() < deadline:
        time.sleep(0.02)
    c = openai.OpenAI(base_url=app.url, api_key="unused", max_retries=0)
    r = c.chat.completions.create(model="model", messages=HELLO, max_tokens=3, seed=1)
    c.close()
    app.stop()
    thread.join(10)
    assert r.choices[0].message.content is not None and not thread.is_alive()
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_stop_cancels_a_running_answer(chat_model):
    app = App(chat_model).start(port=0)
    done = {}

    def ask():
        done["r"] = raw(
            app,
            "POST",
            "/v1/chat/completions",
            {
                "model": "model",
                "messages": HELLO,
                "max_tokens": 1000,
                "temperature": 1,
                "top_k": 0,
            },
        )

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    app.stop()
    t.join(10)
    assert time.monotonic() - start < 5 and not t.is_alive()
    # The client got a proper reply, not a bare disconnect: a 503 when its answer was cut
    # short, or the whole answer when it ended (EOS) before the stop.
    status, body = done["r"]
    if status == 503:
        assert body["error"]["message"] == "the server is shutting down"
    else:
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


def test_non_loopback_host_needs_a_key(chat_model, capsys):
    with pytest.raises(StudioError, match="--api-key"):
        App(chat_model).bind("0.0.0.0", 0)
    # The CLI refuses before loading anything: exit 2 with the reason.
    assert main(["serve", "--model", "/nonexistent", "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_client_leaving_mid_stream_frees_the_model(chat_model):
    import socket

    with App(chat_model).start(port=0) as app:
        chat_model.stop_ids, saved = set(), chat_model.stop_ids  # a long answer, not ended by EOS
        try:
            body = json.dumps(
                {"model": "model", "messages": HELLO, "max_tokens": 1000, "stream": True}
            ).encode()
            sock = socket.create_connection(("127.0.0.1", app.port))
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            seen = b""
            while b"data: " not in seen:
                seen += sock.recv(4096)
            sock.close()  # gone mid-answer: the server must notice and free the model
            start = time.monotonic()
            status, reply = raw(
                app,
                "POST",
                "/v1/chat/completions",
                {"model": "model", "messages": HELLO, "max_tokens": 3},
            )
        finally:
            chat_model.stop_ids = saved
    assert status == 200 and reply["usage"]["completion_tokens"] <= 3
    assert time.monotonic() - start < 5


def test_client_resetting_its_connection_prints_no_traceback(server, capfd):
    import socket
    import struct

    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /v1/mod")  # half a request, then a reset (RST, not a clean close)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    # The server carries on and the console stays clean.
    assert raw(server, "GET", "/v1/models")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def test_error_mid_stream_is_one_error_event_then_done(server, client, monkeypatch, caplog):
    """Headers are out once a stream starts: a failure must end the stream in-band (one error
    event, [DONE], the closing chunk), never a second HTTP response inside the stream."""
    from studio.core.generation import Generation

    def broken(self):
        yield "Hi"
        raise RuntimeError("boom")

    monkeypatch.setattr(Generation, "_run", broken)
    body = {"model": "model", "messages": HELLO, "max_tokens": 4, "stream": True}
    with caplog.at_level("ERROR", logger="studio.serve"):
        status, text = raw(server, "POST", "/v1/chat/completions", body)
    assert status == 200 and "HTTP/1.1" not in text, text
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    errors = [json.loads(e[6:]) for e in events[:-1] if '"error"' in e]
    assert len(errors) == 1 and set(errors[0]["error"]) == {"message", "type", "param", "code"}
    assert "boom" in errors[0]["error"]["message"]
    assert "boom" in caplog.text  # logged with its traceback for the operator
    # The official client reports it as an API error, and the connection stays usable.
    with pytest.raises(openai.APIError, match="boom"):
        list(client.chat.completions.create(**body))
    monkeypatch.undo()
    assert client.chat.completions.create(model="model", messages=HELLO, max_tokens=2).choices


@pytest.mark.parametrize(
    "field, literal",
    [
        ("max_tokens", "Infinity"),
        ("max_tokens", "NaN"),
        ("top_k", "1e400"),
        ("top_k", "-1e400"),
        ("top_k", str(2**70)),
        ("temperature", "1" + "0" * 400),
        ("temperature", "Infinity"),
        ("repetition_penalty", "Infinity"),
        ("seed", str(2**70)),
        ("seed", str(-(2**70))),
    ],
)
def test_non_finite_or_out_of_range_numbers_are_400(server, field, literal):
    body = (
        '{"model": "model", "messages": [{"role": "user", "content": "hi"}], '
        f'"max_tokens": 2, "{field}": {literal}}}'
    ).encode()
    for stream in (False, True):
        data = body.replace(b'"max_tokens": 2,', b'"max_tokens": 2, "stream": true,', 1)
        status, reply = raw(server, "POST", "/v1/chat/completions", data if stream else body)
        assert status == 400, reply
        assert reply["error"]["param"] == field and field in reply["error"]["message"]


def test_bad_content_length_is_400_not_a_hang(server):
    import socket

    for length, status in (("-1", 400), ("-100", 400), ("abc", 400), (str(2**40), 413)):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {KEY}\r\nContent-Length: {length}\r\n\r\n".encode()
                + b'{"model": "model"}'
            )
            reply = b""
            while b"\r\n\r\n" not in reply:
                part = sock.recv(4096)  # times out (fails) if the server waits for EOF
                if not part:
                    break
                reply += part
        finally:
            sock.close()
        assert reply.startswith(f"HTTP/1.1 {status} ".encode()), (length, reply)


REFUSING_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_template_refusing_the_conversation_is_400(tmp_path_factory):
    from studio.core.tiny import build_model

    path = build_model(tmp_path_factory.mktemp("gemma") / "model", chat_template=REFUSING_TEMPLATE)
    with App(load_chat_model(str(path))).start(port=0) as app:
        messages = [{"role": "system", "content": "Be brief."}, *HELLO]
        for stream in (False, True):
            status, body = raw(
                app,
                "POST",
                "/v1/chat/completions",
                {"model": "model", "messages": messages, "max_tokens": 2, "stream": stream},
            )
            assert status == 400 and body["error"]["param"] == "messages"
            assert "System role not supported" in body["error"]["message"]
        status, body = raw(
            app,
            "POST",
            "/v1/chat/completions",
            {"model": "model", "messages": HELLO, "max_tokens": 2},
        )
        assert status == 200 and body["choices"][0]["message"]["content"] is not None
