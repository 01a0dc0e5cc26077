"""The OpenAI-compatible HTTP app (FastAPI): routes, authentication, limits, server-sent events.

    app = create_app(engine, builder, ServerConfig(model_name="minimind", api_key="sk-..."))
    uvicorn.run(app, host="127.0.0.1", port=6006)

Routes: `GET /health` (never authenticated; 503 once the engine has stopped), `GET /v1/models`,
`GET /v1/models/{id}`, `POST /v1/chat/completions`, `POST /v1/completions`, and `GET /demo` (the web
page, with `web_demo=True`). With an API key every `/v1` route needs `Authorization: Bearer <key>`.

Streams are server-sent events in the OpenAI chunk format: every chunk of a choice carries its
`index`, the last one its only `finish_reason`; `stream_options.include_usage` adds `"usage": null`
to every chunk and one final chunk with `"choices": []` and the usage; then `data: [DONE]`. A client
that disconnects cancels its job at once (streaming or not), which frees its branches in the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.demo import DEMO_PAGE
from serving.engine import ChoiceDelta, ChoiceResult, Job, JobUpdate, ServingEngine, TokenLogprob
from serving.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    bad_request,
    finish_reason,
    new_id,
    now,
    parse_request,
    usage,
)
from serving.reasoning import ThinkSplitter, split_reasoning
from serving.work import Work, WorkBuilder, check_model_name

log = logging.getLogger("parallelmind.serving")


@dataclass
class ServerConfig:
    model_name: str
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_concurrent_requests: int = 64
    web_demo: bool = False
    created: int = 0


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, limit: int) -> dict:
    """The body as JSON: 413 past `limit` bytes (checked while reading), 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body has {declared} bytes; this server accepts at most {limit} "
                            "(--max_body_bytes)", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit} bytes (--max_body_bytes)",
                           code="request_too_large")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return data


class _Slots:
    """Concurrent generation requests (single event loop: no lock needed)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self) -> None:
        if self.used >= self.limit:
            raise APIError(429, f"this server is handling {self.used} requests, its limit "
                                "(--max_concurrent_requests); retry later", type="rate_limit_error",
                           code="too_many_requests")
        self.used += 1

    def give(self) -> None:
        self.used -= 1


def _lp_entry(lp: TokenLogprob) -> dict:
    def one(text: str, value: float) -> dict:
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}
    return {**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for _, t, v in lp.top]}


def _completion_logprobs(lps: list[TokenLogprob], offset: int) -> dict:
    """The legacy completions layout: parallel lists, text offsets counted from `offset`."""
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{t: v for _, t, v in lp.top} for lp in lps], "text_offset": offsets}


class _Responder:
    """One request's response: the non-streaming body, or its SSE chunks."""

    def __init__(self, kind: str, model: str, work: Work, *, include_usage: bool = False, echo: bool = False):
        self.kind, self.model, self.work = kind, model, work
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = now()
        self.include_usage, self.echo = include_usage, echo
        self.object = "chat.completion" if kind == "chat" else "text_completion"
        self.splitters = [ThinkSplitter(r) for r in work.reasoning] if kind == "chat" else []
        self.offsets = [len(p) if echo else 0 for p in work.prompts] if kind != "chat" else []

    def usage(self, completion_tokens: int) -> dict:
        return usage(self.work.prompt_tokens, completion_tokens)

    # --- non-streaming -------------------------------------------------------------------------------

    def body(self, results: list[ChoiceResult]) -> dict:
        choices = []
        for r in results:
            if self.kind == "chat":
                reasoning, content = split_reasoning(r.text, self.work.reasoning[r.index])
                msg = {"role": "assistant", "content": content}
                if reasoning is not None:
                    msg["reasoning_content"] = reasoning
                lps = {"content": [_lp_entry(x) for x in r.logprobs]} if r.logprobs is not None else None
                choices.append({"index": r.index, "message": msg, "logprobs": lps,
                                "finish_reason": finish_reason(r.finish_reason)})
            else:
                lps = _completion_logprobs(r.logprobs, self.offsets[r.index]) if r.logprobs is not None else None
                text = (self.work.prompts[r.index] if self.echo else "") + r.text
                choices.append({"index": r.index, "text": text, "logprobs": lps,
                                "finish_reason": finish_reason(r.finish_reason)})
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage(sum(r.num_tokens for r in results))}

    # --- streaming -----------------------------------------------------------------------------------

    def _chunk(self, choices: list[dict], **extra) -> str:
        obj = {"id": self.id, "object": f"{self.object}.chunk" if self.kind == "chat" else self.object,
               "created": self.created, "model": self.model, "choices": choices, **extra}
        if self.include_usage and "usage" not in obj:
            obj["usage"] = None
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def opening(self) -> list[str]:
        """Chat: the role of every choice first (vLLM / OpenAI do the same); completions with echo: the prompt."""
        if self.kind == "chat":
            return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]) for i in range(self.work.num_choices)]
        if self.echo:
            return [self._chunk([{"index": i, "text": p, "logprobs": None, "finish_reason": None}])
                    for i, p in enumerate(self.work.prompts)]
        return []

    def delta(self, d: ChoiceDelta) -> str | None:
        reason = finish_reason(d.finish_reason)
        if self.kind == "chat":
            split = self.splitters[d.index]
            reasoning, content = split.feed(d.text)
            if d.finish_reason is not None:
                r2, c2 = split.flush()
                reasoning, content = reasoning + r2, content + c2
            delta = {}
            if reasoning:
                delta["reasoning_content"] = reasoning
            if content:
                delta["content"] = content
            lps = {"content": [_lp_entry(x) for x in d.logprobs]} if d.logprobs else None
            if not delta and reason is None and lps is None:
                return None
            return self._chunk([{"index": d.index, "delta": delta, "logprobs": lps, "finish_reason": reason}])
        lps = None
        if d.logprobs:
            lps = _completion_logprobs(d.logprobs, self.offsets[d.index])
            self.offsets[d.index] += sum(len(x.token) for x in d.logprobs)
        if not d.text and reason is None and lps is None:
            return None
        return self._chunk([{"index": d.index, "text": d.text, "logprobs": lps, "finish_reason": reason}])

    def closing(self, results: list[ChoiceResult]) -> list[str]:
        out = []
        if self.include_usage:
            out.append(self._chunk([], usage=self.usage(sum(r.num_tokens for r in results))))
        return [*out, "data: [DONE]\n\n"]


async def _next_update(job: Job, request: Request) -> JobUpdate | None:
    """The job's next update, or None when the client disconnected first."""
    get = asyncio.ensure_future(job.updates.get())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if get in done:
        return get.result()
    get.cancel()
    return None


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


class _Release:
    """Once per request, however it ends: cancel its job unless it finished, and free its slot."""

    def __init__(self, engine: ServingEngine, slots: _Slots):
        self.engine, self.slots = engine, slots
        self.job: Job | None = None
        self.finished = False
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        if self.job is not None and not self.finished:
            self.engine.cancel(self.job)
        self.slots.give()


class _EventStream(StreamingResponse):
    """SSE whose clean-up runs even when the client leaves before the first chunk was produced."""

    def __init__(self, content: AsyncIterator[str], release: _Release):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, answered as one OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(APIError(exc.status_code, msg, code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(bad_request(str(exc)))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", code="internal_error"))


def authorize(request: Request, api_key: str | None) -> None:
    """401 unless the request carries `Authorization: Bearer <api_key>` (constant-time comparison)."""
    if api_key is None:
        return
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


class _Generation:
    """The two generation routes: parse and check a request, submit its job, answer (JSON or a stream)."""

    def __init__(self, engine: ServingEngine, builder: WorkBuilder, config: ServerConfig, slots: _Slots):
        self.engine, self.builder, self.config, self.slots = engine, builder, config, slots

    def _work(self, kind: str, data: dict):
        if kind == "chat":
            req = parse_request(ChatCompletionRequest, data)
            check_model_name(req.model, self.config.model_name)
            return req, self.builder.chat(req)
        req = parse_request(CompletionRequest, data)
        check_model_name(req.model, self.config.model_name)
        return req, self.builder.completion(req)

    async def __call__(self, request: Request, kind: str):
        authorize(request, self.config.api_key)
        self.slots.take()
        release = _Release(self.engine, self.slots)
        try:
            req, work = self._work(kind, await read_json(request, self.config.max_body_bytes))
            responder = _Responder(kind, self.config.model_name, work, include_usage=req.include_usage,
                                   echo=getattr(req, "echo", False))
            job = release.job = Job(work.parts, stream=req.stream, num_logprobs=req.num_logprobs)
            self.engine.submit(job)
            if req.stream:
                response = _EventStream(_stream(job, responder, release), release)
                release = None  # the stream releases the slot when it ends, however it ends
                return response
            update = await _next_update(job, request)
            if update is None:  # the client went away: stop decoding for it
                return JSONResponse({}, status_code=499)
            release.finished = True
            if update.error is not None:
                raise update.error
            return JSONResponse(responder.body(update.results))
        finally:
            if release is not None:
                release()


async def _stream(job: Job, responder: _Responder, release: _Release) -> AsyncIterator[str]:
    try:
        for chunk in responder.opening():
            yield chunk
        while True:
            update = await job.updates.get()
            if update.error is not None:
                release.finished = True
                yield f"data: {json.dumps(update.error.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            for d in update.deltas:
                chunk = responder.delta(d)
                if chunk is not None:
                    yield chunk
            if update.results is not None:
                release.finished = True
                for chunk in responder.closing(update.results):
                    yield chunk
                return
    finally:  # also when the client disconnects: Starlette cancels the iteration
        release()


def create_app(engine: ServingEngine, builder: WorkBuilder, config: ServerConfig) -> FastAPI:
    """The app over a started engine (see the module docstring); the engine is closed on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="ParallelMind OpenAI-compatible server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    slots = _Slots(config.max_concurrent_requests)
    app.state.engine, app.state.slots, app.state.config = engine, slots, config
    _add_error_handlers(app)
    generate = _Generation(engine, builder, config, slots)

    def model_card() -> dict:
        return {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "parallelmind"}

    @app.get("/health")
    async def health():
        if not engine.alive:
            return error_response(APIError(503, f"the generation engine is not running ({engine.dead or 'stopped'})",
                                           code="engine_unavailable"))
        return {"status": "ok", "model": config.model_name, **engine.stats()}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request, config.api_key)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        authorize(request, config.api_key)
        check_model_name(model_id, config.model_name)
        return model_card()

    if config.web_demo:
        @app.get("/demo", response_class=HTMLResponse)
        async def demo():
            return HTMLResponse(DEMO_PAGE.read_text(encoding="utf-8"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, "completion")

    return app
