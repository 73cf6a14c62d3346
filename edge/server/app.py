"""The HTTP side of `edge serve`: OpenAI's API routes over loaded edge models (Starlette).

JSON requests in; JSON responses or server-sent events out. A route reads and validates
its body (`schemas`), picks the model's worker, submits one job and awaits the job's items
through an asyncio queue that the worker thread feeds with `call_soon_threadsafe`. The
event loop never runs the model, so it keeps answering (health, 429s, other models) while
a model generates. User errors become OpenAI error objects with a 4xx status; anything
else a 500 with the same shape, and the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from edge.errors import EdgeError
from edge.llm import DEFAULT_MAX_TOKENS
from edge.server import openai_format
from edge.server.openai_format import Completion
from edge.server.schemas import (ApiError, GenerationRequest, from_edge_error, parse_chat, parse_completion,
                                 parse_embedding)
from edge.server.worker import END, Job, QueueFull, Worker

MAX_BODY_BYTES = 1 << 20  # far more than any context window's worth of text


def create_app(models: dict, api_key: str | None = None, max_queue: int = 16,
               max_body: int = MAX_BODY_BYTES) -> Starlette:
    """`models`: id -> an `edge.load(...)` result (LanguageModel or EmbeddingModel)."""
    workers = {name: Worker(model, max_queue, name) for name, model in models.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for worker in workers.values():
            worker.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: server_error,
    })
    app.state.workers, app.state.max_body, app.state.created = workers, max_body, int(time.time())
    if api_key:
        app.add_middleware(RequireKey, key=api_key)
    return app


# --- routes ------------------------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    workers: dict[str, Worker] = request.app.state.workers
    return JSONResponse({"status": "ok", "models": [
        {"id": name, "task": w.model.manifest.model.task, "busy": w.busy, "queued": w.queued, "served": w.served,
         "cancelled": w.cancelled} for name, w in workers.items()]})


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(openai_format.models(list(request.app.state.workers), request.app.state.created))


async def chat_completions(request: Request):
    return await _generate(request, parse_chat(await read_json(request)))


async def completions(request: Request):
    return await _generate(request, parse_completion(await read_json(request)))


async def embeddings(request: Request) -> JSONResponse:
    req = parse_embedding(await read_json(request))
    worker = _worker(request, req.model, decoder=False)
    _, items = _submit(worker, req.model, partial(_embed, req.texts))
    vectors, tokens = [item async for item in items][0]  # (n, dim) float32, prompt tokens
    if req.dimensions is not None and req.dimensions != vectors.shape[1]:
        raise ApiError(400, f"`dimensions` must be {vectors.shape[1]} for {req.model} (edge does not shorten "
                            f"embeddings), got {req.dimensions}.", param="dimensions")
    return JSONResponse(openai_format.embeddings(req.model, vectors, tokens, req.base64))


async def _generate(request: Request, req: GenerationRequest):
    worker = _worker(request, req.model, decoder=True)
    job, items = _submit(worker, req.model, partial(_stream, req))
    completion = Completion(req.model, req.chat)
    try:
        first = await anext(items)  # a prompt over the context window fails here, before any header is sent
    except BaseException:
        job.cancel()
        raise
    if req.stream:
        return EventStream(_events(completion, first, items, req.include_usage), job)
    try:
        chunks = [first] + [chunk async for chunk in items]
    finally:
        job.cancel()  # a no-op once the job ended; stops it if this handler was cancelled
    last = chunks[-1]
    return JSONResponse(completion.response("".join(c.text for c in chunks), last.finish_reason, last.timings))


async def _events(completion: Completion, first, items: AsyncIterator, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: one chunk per piece of text, the finish reason, the usage if asked, [DONE]."""
    if completion.chat:
        yield _sse(completion.chunk("", first=True, with_usage=include_usage))
    try:
        chunk = first
        while chunk is not None:
            if chunk.text:
                yield _sse(completion.chunk(chunk.text, with_usage=include_usage))
            if chunk.finish_reason:
                yield _sse(completion.chunk("", chunk.finish_reason, with_usage=include_usage))
                if include_usage:
                    yield _sse(completion.usage_chunk(chunk.timings))
            chunk = await anext(items, None)
    except ApiError as exc:  # the status line is sent already: report it in the stream
        yield _sse(openai_format.error(exc.message, exc.type, exc.param, exc.code))
    yield "data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """An SSE response that cancels its job however it ends: finished, failed, or client gone."""

    def __init__(self, events: AsyncIterator[str], job: Job):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# --- jobs: run on the model's worker thread --------------------------------------------


def _stream(req: GenerationRequest, lm) -> Iterator:
    """Chunks of one generation. Without max_tokens: as many as fit, up to edge's default."""
    ids = lm.encode_chat(req.prompt) if req.chat else lm.encode_prompt(req.prompt, raw=True)
    options = dict(req.options)
    if options["max_tokens"] is None:
        options["max_tokens"] = max(1, min(DEFAULT_MAX_TOKENS, lm.decoder.context_length - len(ids)))
    return lm.stream_ids(ids, **options)


def _embed(texts: list[str], model) -> Iterator:
    """One item: the vectors (n, dim) and the token count, after the model's own truncation."""
    encodings = model.tokenize(texts)
    yield model.embed_encodings(encodings), sum(len(e.ids) for e in encodings)


def _submit(worker: Worker, name: str, work: Callable) -> tuple[Job, AsyncIterator]:
    """Queue `work` on `worker` (429 at once if the queue is full); its items, awaited here."""
    loop = asyncio.get_running_loop()
    results: asyncio.Queue = asyncio.Queue()

    def sink(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(results.put_nowait, item)

    job = Job(work, sink)
    try:
        worker.submit(job)
    except QueueFull:
        raise ApiError(429, f"model {name} has {worker.queued} requests waiting already (--max-queue). "
                            "Retry in a moment.", type="rate_limit_error", code="queue_full") from None

    async def items() -> AsyncIterator:
        while (item := await results.get()) is not END:
            if isinstance(item, EdgeError):
                raise from_edge_error(item)
            if isinstance(item, BaseException):
                raise item
            yield item

    return job, items()


def _worker(request: Request, name: str, decoder: bool) -> Worker:
    workers: dict[str, Worker] = request.app.state.workers
    if name not in workers:
        raise ApiError(404, f"model {name!r} is not served here. Use one of: {', '.join(workers)} "
                            "(GET /v1/models).", param="model", code="model_not_found")
    worker = workers[name]
    if worker.model.manifest.is_decoder != decoder:
        route = "/v1/chat/completions or /v1/completions" if worker.model.manifest.is_decoder else "/v1/embeddings"
        raise ApiError(400, f"model {name!r} is a {worker.model.manifest.model.task} model: use it with {route}.",
                       param="model", code="model_not_supported")
    return worker


# --- request bodies, authentication, errors ---------------------------------------------


async def read_json(request: Request) -> object:
    """The body parsed as JSON; 413 past the size limit, 400 if it is not JSON."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({str(exc).splitlines()[0]}). "
                            "Send a JSON object.") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes. Send a shorter prompt.",
                    code="request_too_large")


class RequireKey:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <key>`, else 401."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        given = Headers(scope=scope).get("authorization", "").encode() if scope["type"] == "http" else None
        if given is not None and not hmac.compare_digest(given, self.expected):
            response = _error_response(ApiError(401, "missing or wrong API key. Send the header "
                                                     "`Authorization: Bearer <key>` with the server's --api-key.",
                                                code="invalid_api_key"))
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405), in OpenAI's error shape."""
    message = {404: f"no route {request.url.path}. See GET /v1/models and the README's list of routes.",
               405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
    return _error_response(ApiError(exc.status_code, message), exc.headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}. The server goes on; "
                                         "please report this with EDGE_DEBUG=1 output.", type="server_error"))


def _error_response(exc: ApiError, headers: dict | None = None) -> JSONResponse:
    extra = {"Retry-After": "1"} if exc.status == 429 else {}
    return JSONResponse(openai_format.error(exc.message, exc.type, exc.param, exc.code), exc.status,
                        headers={**(headers or {}), **extra})


ROUTES = [
    Route("/health", health),
    Route("/v1/models", list_models),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
