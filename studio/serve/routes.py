"""The API on FastAPI: routes, the key check, bodies read within their bound, answers.

Every answer is JSON in OpenAI's shape, the router's own 404 and 405 included. Generation
happens on the engine's thread (engine.py); a handler only waits for its job's events, and
stops the job when its client goes away. A streamed answer is server-sent events; once its
200 is out, an error goes in-band as one event, then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from studio.serve import protocol as api
from studio.serve.engine import Job, shutting_down
from studio.serve.limits import parse_json, too_large

if TYPE_CHECKING:
    from studio.serve.app import App

log = logging.getLogger("studio.serve")


def json_response(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
    try:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate echoed from the request: escape it
        data = json.dumps(obj).encode("ascii")
    return Response(data, status, headers, media_type="application/json")


def error_response(e: api.ApiError) -> Response:
    return json_response(e.body(), e.status, e.headers)


def answers(handler):
    """Turn whatever a handler raises into an answer in OpenAI's shape."""

    @functools.wraps(handler)
    async def wrapped(request: Request):
        try:
            return await handler(request)
        except api.ApiError as e:
            return error_response(e)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is there to read it
        except Exception as e:
            log.exception("request failed")
            return error_response(api.ApiError(500, f"internal error: {e}", type="server_error"))

    return wrapped


class Routes:
    def __init__(self, app: App):
        self.app = app
        self.limits = app.limits

    def build(self):
        """The ASGI app: FastAPI's, with paths taken as the old server took them ("/v1/models/"
        is "/v1/models")."""
        web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
        web.add_api_route("/health", answers(self.health), methods=["GET"])
        web.add_api_route("/v1/models", answers(self.models), methods=["GET"])
        web.add_api_route("/v1/models/{name:path}", answers(self.model), methods=["GET"])
        web.add_api_route("/v1/chat/completions", answers(self.chat), methods=["POST"])
        web.add_api_route("/v1/completions", answers(self.completion), methods=["POST"])
        web.add_api_route("/v1/embeddings", answers(self.embeddings), methods=["POST"])
        web.add_exception_handler(HTTPException, self.not_routed)

        async def asgi(scope, receive, send):
            if scope["type"] == "http":
                scope["path"] = scope["path"].rstrip("/") or "/"
            await web(scope, receive, send)

        return asgi

    # -- plumbing ------------------------------------------------------------------------

    async def not_routed(self, request: Request, exc: HTTPException) -> Response:
        method, path = request.method, request.url.path
        shown = path if len(path) <= 200 else path[:200] + "..."
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return error_response(
                api.ApiError(
                    405,
                    f"{method[:20]} is not allowed on {shown}; use {allowed.replace(', ', ' or ')}",
                    code="method_not_allowed",
                    headers={"Allow": allowed},
                )
            )
        if exc.status_code == 404:
            return error_response(
                api.ApiError(404, f"no route {method[:20]} {shown}", code="not_found")
            )
        return error_response(api.ApiError(exc.status_code, str(exc.detail)))

    def authorize(self, request: Request) -> None:
        key = self.app.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(errors="replace"), key.encode()):
            raise api.ApiError(
                401,
                "Incorrect or missing API key. Send 'Authorization: Bearer KEY'.",
                code="invalid_api_key",
            )

    async def body(self, request: Request):
        """The JSON body, never read past `max_body_bytes` (a chunked one is counted as it
        comes; a Content-Length past it was refused before the app saw the request)."""
        self.authorize(request)
        raw, limit = bytearray(), self.limits.max_body_bytes
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large(self.limits)
        if not raw:
            raise api.bad_request("the request needs a JSON body (sent with a Content-Length)")
        return parse_json(bytes(raw), self.limits)

    async def run(self, request: Request, job: Job) -> asyncio.Task:
        """Hand `job` to the engine; a task that stops it if the client goes away."""

        async def watch():
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.app.engine.done(job)

        self.app.engine.submit(job)
        return asyncio.create_task(watch())

    # -- routes --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def models(self, request: Request) -> Response:
        self.authorize(request)
        app = self.app
        return json_response(
            {"object": "list", "data": [api.model_object(app.model_id, app.created)]}
        )

    async def model(self, request: Request) -> Response:
        self.authorize(request)
        self.app.check_model(request.path_params["name"])
        return json_response(api.model_object(self.app.model_id, self.app.created))

    async def chat(self, request: Request) -> Response:
        req = api.parse_chat(await self.body(request))
        self.app.check_model(req.model)
        return await self.answer(request, Job("chat", req), "chatcmpl")

    async def completion(self, request: Request) -> Response:
        req = api.parse_completion(await self.body(request))
        self.app.check_model(req.model)
        return await self.answer(request, Job("complete", req), "cmpl")

    async def embeddings(self, request: Request) -> Response:
        name, inputs, encoding = api.parse_embeddings(await self.body(request))
        self.app.check_model(name)
        job = Job("embed", inputs=inputs)
        watcher = await self.run(request, job)
        try:
            kind, *rest = await job.events.get()
            if kind == "error":
                raise rest[0]
        finally:
            watcher.cancel()
            self.app.engine.done(job)
        return json_response(
            api.embeddings_response(self.app.model_id, job.vectors, job.tokens, encoding)
        )

    async def answer(self, request: Request, job: Job, prefix: str) -> Response:
        req, app = job.request, self.app
        context, wanted = app.model.context_length, req.settings.max_new_tokens
        if context and req.max_tokens_given and wanted >= context:
            raise api.bad_request(
                f"max_tokens is {wanted}, but this model's context holds {context} tokens, "
                "the prompt included",
                "max_tokens",
                "context_length_exceeded",
            )
        watcher = await self.run(request, job)
        streaming = False
        try:
            kind, *rest = await job.events.get()
            if kind == "error":
                raise rest[0]
            rid = api.new_id(prefix)
            if req.stream:
                streaming = True
                return EventStream(self, job, rid, prefix == "chatcmpl", watcher)
            while (event := await job.events.get())[0] != "end":
                if event[0] == "error":
                    raise event[1]
            if job.gen.finish_reason == "cancelled" and app.stopping.is_set():
                raise shutting_down()
            body = api.chat_response if prefix == "chatcmpl" else api.completion_response
            return json_response(body(rid, app.model_id, job.gen))
        finally:
            if not streaming:
                watcher.cancel()
                app.engine.done(job)


class EventStream(Response):
    """Server-sent events from a job's pieces. A write that waits `request_timeout` for a
    client that stopped reading drops that client."""

    media_type = "text/event-stream"

    def __init__(self, routes: Routes, job: Job, rid: str, chat: bool, watcher: asyncio.Task):
        super().__init__(headers={"Cache-Control": "no-cache"})
        self.routes, self.job, self.rid, self.chat, self.watcher = routes, job, rid, chat, watcher

    async def __call__(self, scope, receive, send) -> None:
        app, job = self.routes.app, self.job
        timeout = self.routes.limits.request_timeout
        name, chat, rid = app.model_id, self.chat, self.rid
        chunk = api.chat_chunk if chat else api.completion_chunk

        async def write(body: bytes, more: bool = True) -> None:
            message = {"type": "http.response.body", "body": body, "more_body": more}
            await asyncio.wait_for(send(message), timeout)

        async def event(obj) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
            try:
                await write(f"data: {data}\n\n".encode())
            except UnicodeEncodeError:  # a lone surrogate echoed from the request
                await write(f"data: {json.dumps(obj)}\n\n".encode())

        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if chat:
                await event(chunk(rid, name, {"role": "assistant", "content": ""}))
            while True:
                kind, *rest = await job.events.get()
                if kind == "piece":
                    await event(chunk(rid, name, {"content": rest[0]} if chat else rest[0]))
                elif kind == "error":
                    # The 200 is out, so a second response cannot follow: the error goes
                    # in-band as one event in OpenAI's shape (the openai client raises it).
                    await event(rest[0].body())
                    break
                else:
                    gen = job.gen
                    reason = api.finish(gen.finish_reason)
                    await event(chunk(rid, name, {} if chat else "", reason))
                    if job.request.include_usage:
                        await event(chunk(rid, name, {} if chat else "", use=api.usage(gen)))
                    break
            await event("[DONE]")
            await write(b"", more=False)
        except TimeoutError:
            log.info("dropped a client that stopped reading its answer")
            connection = scope.get("studio.connection")
            if connection is not None:
                connection.transport.abort()
        finally:
            self.watcher.cancel()
            app.engine.done(job)
