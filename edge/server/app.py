"""The HTTP side of `edge serve`: OpenAI's API routes over loaded edge models (Starlette);
Ollama's routes (ollama.py) reuse the job helpers here.

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
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from edge.engine.batch_runner import refusal
from edge.errors import EdgeError
from edge.generation.chat_template import renders_tools
from edge.generation.model import DEFAULT_MAX_TOKENS
from edge.server import openai_format
from edge.server.grounding import FIELD, Retriever, fields, ground
from edge.server.http import MAX_BODY_BYTES, RequireKey, api_error, http_error, read_json, server_error
from edge.server.openai_format import Completion
from edge.server.request_log import RequestLog, note_tokens
from edge.server.schemas import (ApiError, GenerationRequest, from_edge_error, parse_chat, parse_completion,
                                 parse_embedding)
from edge.generation.scheduler import DEFAULT_KV_TOKENS
from edge.server.batch_worker import BatchWorker
from edge.server.tools import as_text, parse_calls
from edge.server.worker import END, Job, QueueFull, ShuttingDown, Worker


def create_app(models: dict, api_key: str | None = None, max_queue: int = 16,
               max_body: int = MAX_BODY_BYTES, draft: str = "lookup", parallel: int = 1,
               kv_tokens: int = DEFAULT_KV_TOKENS, log: TextIO | None = None,
               retriever: Retriever | None = None) -> Starlette:
    """`models`: id -> an `edge.load(...)` result (LanguageModel or EmbeddingModel);
    `draft`: how generations draft tokens (see LanguageModel.stream_ids); `parallel`: above
    1, each generation model whose graph batches (`batch_refusal`) decodes that many requests
    together, sharing `kv_tokens` of KV cache (a request decoding alone keeps its drafts);
    others run one request at a time; `log`: where to
    write one line per request (None: nowhere); `retriever`: the index for chat requests
    with `"edge_index": true` (see grounding.py)."""
    workers = {name: _make_worker(model, max_queue, name, parallel, kv_tokens) for name, model in models.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for worker in workers.values():
            worker.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: server_error,
    })
    app.state.workers, app.state.max_body, app.state.created = workers, max_body, int(time.time())
    app.state.draft, app.state.retriever = draft, retriever
    if api_key:
        app.add_middleware(RequireKey, key=api_key)
    if log is not None:  # outermost, so refused requests are logged too
        app.add_middleware(RequestLog, stream=log)
    return app


def _make_worker(model, max_queue: int, name: str, parallel: int, kv_tokens: int) -> Worker | BatchWorker:
    if parallel > 1 and model.manifest.is_decoder and not batch_refusal(model):
        return BatchWorker(model, max_queue, name, parallel, kv_tokens)
    return Worker(model, max_queue, name)


def batch_refusal(model) -> str | None:
    """Why a generation model is served one request at a time despite --parallel (its graph
    cannot batch slots of different lengths), for the start-up note; None when it batches."""
    return refusal(model.decoder) if model.manifest.is_decoder else None


# --- routes ------------------------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    workers: dict[str, Worker | BatchWorker] = request.app.state.workers
    return JSONResponse({"status": "ok", "models": [
        {"id": name, "task": w.model.manifest.model.task, "busy": w.busy, "queued": w.queued, "served": w.served,
         "cancelled": w.cancelled, "slots": getattr(w, "slots", 1), "slots_busy": getattr(w, "slots_busy", int(w.busy))}
        for name, w in workers.items()]})


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(openai_format.models(list(request.app.state.workers), request.app.state.created))


async def chat_completions(request: Request):
    body = await read_json(request)
    req = parse_chat(body)
    if not body.get(FIELD):
        return await _generate(request, req)
    lm = _worker(request, req.model, decoder=True).model
    req, sources = await ground(request.app.state.retriever, body, req, lm)
    return await _generate(request, req, sources)


async def completions(request: Request):
    return await _generate(request, parse_completion(await read_json(request)))


async def embeddings(request: Request) -> JSONResponse:
    req = parse_embedding(await read_json(request))
    worker = _worker(request, req.model, decoder=False)
    job, items = _submit(worker, req.model, partial(_embed, req.texts))
    vectors, tokens = (await _while_connected(request, job, _collect(items)))[0]  # (n, dim) float32, token count
    note_tokens(tokens)
    if req.dimensions is not None and req.dimensions != vectors.shape[1]:
        raise ApiError(400, f"`dimensions` must be {vectors.shape[1]} for {req.model} (edge does not shorten "
                            f"embeddings), got {req.dimensions}.", param="dimensions")
    return JSONResponse(openai_format.embeddings(req.model, vectors, tokens, req.base64))


def generation_work(request: Request, req: GenerationRequest, worker) -> Callable:
    """A generation job's work for `worker`: the prompt and options for a batch worker (its
    scheduler runs them), else the whole stream (with drafts)."""
    if isinstance(worker, BatchWorker):
        return partial(_batched, req, request.app.state.draft, worker.scheduler.runner.capacity)
    return partial(_stream, req, request.app.state.draft)


async def _generate(request: Request, req: GenerationRequest, sources=None):
    worker = _worker(request, req.model, decoder=True)
    job, items = _submit(worker, req.model, generation_work(request, req, worker))
    completion = Completion(req.model, req.chat, fields(sources))
    # A prompt over the context window fails at the first item, before any header is sent.
    first = await _while_connected(request, job, anext(items))
    if req.stream and not req.tools:
        return EventStream(_events(completion, first, items, req.include_usage), job)
    chunks = [first] + await _while_connected(request, job, _collect(items))
    text, last = "".join(c.text for c in chunks), chunks[-1]
    calls = parse_calls(text, req.tools.active) if req.tools else None
    if req.stream:  # a reply that may be a call is sent once it is known which it is
        return EventStream(_whole_events(completion, text, last, calls, req.include_usage), job)
    return JSONResponse({**completion.response(text, last.finish_reason, last.timings, calls), **fields(sources, text)})


async def _collect(items: AsyncIterator) -> list:
    return [item async for item in items]


async def _while_connected(request: Request, job: Job, awaitable):
    """Await `awaitable`; if the client hangs up first (or this handler is cancelled), cancel
    the job, so the worker moves on instead of generating for nobody."""
    work = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            job.cancel()
    # cancel() only schedules the cancellation: a task cancelled just now is not done yet,
    # and asking for its result then raised InvalidStateError instead of answering 499.
    if not work.done() or work.cancelled():
        raise ApiError(499, "the client closed the connection.", code="client_closed")
    return work.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is read already, so nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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


async def _whole_events(completion: Completion, text: str, last, calls: list[dict] | None,
                        include_usage: bool) -> AsyncIterator[str]:
    """A finished reply as a stream: its tool calls in OpenAI's delta format, or its text."""
    yield _sse(completion.chunk("", first=True, with_usage=include_usage))
    if calls:
        for chunk in completion.tool_call_chunks(calls, include_usage):
            yield _sse(chunk)
    else:
        yield _sse(completion.chunk(text, with_usage=include_usage))
        yield _sse(completion.chunk("", last.finish_reason, with_usage=include_usage))
    if include_usage:
        yield _sse(completion.usage_chunk(last.timings))
    yield "data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """A streamed response (SSE; Ollama's NDJSON) that cancels its job however it ends:
    finished, failed, or client gone."""

    def __init__(self, events: AsyncIterator[str], job: Job, media_type: str = "text/event-stream"):
        super().__init__(events, media_type=media_type, headers={"Cache-Control": "no-cache"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# --- jobs: run on the model's worker thread --------------------------------------------


def _stream(req: GenerationRequest, draft: str, lm) -> Iterator:
    """Chunks of one generation."""
    ids, options = _prompt(req, lm)
    return lm.stream_ids(ids, draft=draft, **options)


def _batched(req: GenerationRequest, draft: str, slot_tokens: int, lm) -> tuple[list[int], dict]:
    """A batch worker's job: the prompt and options, with the drafts it checks when it decodes alone."""
    ids, options = _prompt(req, lm, slot_tokens)
    return ids, {**options, "draft": draft}


def _prompt(req: GenerationRequest, lm, slot_tokens: int | None = None) -> tuple[list[int], dict]:
    """The prompt's ids and the generation options (a batch worker's job too): tools in
    the prompt and the grammar of their calls. Without max_tokens: as many as fit (in the
    context, or in a batch slot of `slot_tokens`), up to edge's default."""
    options = dict(req.options)
    if req.chat:
        native = bool(req.tools) and renders_tools(lm.manifest.tokenizer)
        turns = req.tools.messages(req.prompt, native) if req.tools else [as_text(m) for m in req.prompt]
        if req.tools and (grammar := req.tools.grammar()):
            options["grammar"] = grammar
        ids = lm.encode_chat(turns, tools=req.tools.definitions() if native else None)
    else:
        ids = lm.encode_prompt(req.prompt, raw=True)
    if options["max_tokens"] is None:
        room = min(lm.decoder.context_length, slot_tokens or lm.decoder.context_length) - len(ids)
        options["max_tokens"] = max(1, min(DEFAULT_MAX_TOKENS, room))
    return ids, options


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
            if isinstance(item, ShuttingDown):
                raise ApiError(503, "the server is shutting down: this request was not completed. "
                                    "Retry when it is back.", type="server_error", code="shutting_down")
            if isinstance(item, BaseException):
                raise item
            if getattr(item, "finish_reason", None):  # a generation's last chunk: its counts go in the log
                note_tokens(item.timings.prompt_tokens, item.timings.completion_tokens)
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


ROUTES = [  # edge/server/ollama.py appends Ollama's routes (edge.server imports it)
    Route("/health", health),
    Route("/v1/models", list_models),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
