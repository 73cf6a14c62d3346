"""Ollama's HTTP API beside OpenAI's: /api/generate, /api/chat, /api/embed, /api/tags, /api/show.

Ollama request bodies in; Ollama's response shapes out: generate and chat stream NDJSON
(one JSON object per line, the last with `"done": true` and the counts) unless
`"stream": false`. A request becomes the same job the OpenAI routes run (`app._stream`,
`app._embed`), submitted, awaited and cancelled through app.py's helpers, so both APIs share
one queue per model. Options: temperature, top_k, top_p, min_p, repeat_penalty, seed,
num_predict, stop (others, such as num_ctx, are Ollama runtime settings and are ignored).
Errors are Ollama's `{"error": "message"}` with the same status codes as the OpenAI routes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge.server import app as server
from edge.server.http import read_json
from edge.server.request_log import note_tokens
from edge.server.schemas import (ApiError, GenerationRequest, _field, _message, _object, _stop, check_sampling,
                                 parse_embedding)

NDJSON = "application/x-ndjson"
OPTIONS = {  # Ollama option -> (edge keyword, type)
    "temperature": ("temperature", float), "top_k": ("top_k", int), "top_p": ("top_p", float),
    "min_p": ("min_p", float), "repeat_penalty": ("repetition_penalty", float), "seed": ("seed", int),
    "num_predict": ("max_tokens", int),
}


def _ollama_errors(route):
    """Refusals in Ollama's shape, `{"error": message}`, which its clients read."""
    @functools.wraps(route)
    async def answered(request: Request):
        try:
            return await route(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, exc.status)
    return answered


# --- requests: Ollama bodies -> edge's GenerationRequest ---------------------------------


def _name(body: dict) -> str:
    """The model id; Ollama clients may add the default tag (`tiny:latest`)."""
    name = _field(body, "model", str) or _field(body, "name", str, required=True)
    return name.removesuffix(":latest")


def _options(body: dict) -> dict:
    options = _field(body, "options", dict, default={})
    out = {"max_tokens": None, "stop": _stop({"stop": options.get("stop")})}
    for name, (keyword, kind) in OPTIONS.items():
        out[keyword] = _field(options, name, kind)
    if out["max_tokens"] is not None and out["max_tokens"] < 0:  # -1, -2: as much as fits
        out["max_tokens"] = None
    elif out["max_tokens"] == 0:
        raise ApiError(400, "`options.num_predict` must be >= 1 (or -1 for as many as fit).", param="num_predict")
    check_sampling(out)
    return out


def parse_generate(body: dict, template: bool) -> GenerationRequest:
    """`prompt` (+ `system`) through the chat template, or as plain text with `raw` or when
    the bundle has no template."""
    prompt = _field(body, "prompt", str, default="")
    system = _field(body, "system", str)
    if template and not _field(body, "raw", bool, default=False):
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return GenerationRequest(_name(body), prompt, _options(body), _field(body, "stream", bool, default=True), False)


def parse_chat(body: dict) -> GenerationRequest:
    messages = [_message(m, i) for i, m in enumerate(_field(body, "messages", list, default=[]))]
    return GenerationRequest(_name(body), messages, _options(body), _field(body, "stream", bool, default=True), False)


# --- routes --------------------------------------------------------------------------------


@_ollama_errors
async def generate(request: Request):
    body = _object(await read_json(request))
    worker = server._worker(request, _name(body), decoder=True)
    req = parse_generate(body, bool(worker.model.manifest.tokenizer.chat_template))
    if not _field(body, "prompt", str):  # Ollama: an empty prompt only loads the model
        return JSONResponse(_done(req.model, {"response": ""}, "load"))
    return await _run(request, req, lambda text: {"response": text})


@_ollama_errors
async def chat(request: Request):
    req = parse_chat(_object(await read_json(request)))
    server._worker(request, req.model, decoder=True)
    if not req.prompt:  # Ollama: no messages only loads the model
        return JSONResponse(_done(req.model, {"message": {"role": "assistant", "content": ""}}, "load"))
    return await _run(request, req, lambda text: {"message": {"role": "assistant", "content": text}})


async def _run(request: Request, req: GenerationRequest, content):
    """Submit the generation; stream NDJSON lines or answer with one object."""
    started = time.perf_counter()
    worker = server._worker(request, req.model, decoder=True)
    job, items = server._submit(worker, req.model, server.generation_work(request, req, worker))
    first = await server._while_connected(request, job, anext(items))
    if req.stream:
        return server.EventStream(_lines(req.model, content, first, items, started), job, media_type=NDJSON)
    chunks = [first] + await server._while_connected(request, job, server._collect(items))
    last = chunks[-1]
    return JSONResponse(_done(req.model, content("".join(c.text for c in chunks)), last.finish_reason,
                              last.timings, started))


async def _lines(model: str, content, first, items: AsyncIterator, started: float) -> AsyncIterator[str]:
    chunk = first
    try:
        while chunk is not None:
            if chunk.text:
                yield _line({"model": model, "created_at": _now(), **content(chunk.text), "done": False})
            if chunk.finish_reason:
                yield _line(_done(model, content(""), chunk.finish_reason, chunk.timings, started))
            chunk = await anext(items, None)
    except ApiError as exc:  # the status line is sent already: report it in the stream, as Ollama does
        yield _line({"error": exc.message})


@_ollama_errors
async def embed(request: Request) -> JSONResponse:
    body = _object(await read_json(request))
    req = parse_embedding({**body, "model": _name(body)})
    started = time.perf_counter()
    job, items = server._submit(server._worker(request, req.model, decoder=False), req.model,
                                partial(server._embed, req.texts))
    vectors, tokens = (await server._while_connected(request, job, server._collect(items)))[0]  # (n, dim)
    note_tokens(tokens)
    return JSONResponse({"model": req.model, "embeddings": vectors.tolist(), "total_duration": _ns(started),
                         "load_duration": 0, "prompt_eval_count": tokens})


async def tags(request: Request) -> JSONResponse:
    return JSONResponse({"models": [{"name": name, "model": name, **_file_facts(w.model), "details": _details(w.model)}
                                    for name, w in request.app.state.workers.items()]})


@_ollama_errors
async def show(request: Request) -> JSONResponse:
    body = _object(await read_json(request))
    name = _name(body)
    workers = request.app.state.workers
    if name not in workers:
        raise ApiError(404, f"model '{name}' not found")
    model = workers[name].model
    m, sampling = model.manifest.model, model.manifest.sampling
    values = {f: getattr(sampling, f, None) for f in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")}
    parameters = "\n".join(f"{'repeat_penalty' if k == 'repetition_penalty' else k} {v:g}"
                           for k, v in values.items() if v is not None)  # the bundle's recommended sampling
    info = {"general.architecture": m.architecture, f"{m.architecture}.context_length": m.context_length,
            f"{m.architecture}.embedding_length": m.hidden_size, f"{m.architecture}.block_count": m.num_layers,
            f"{m.architecture}.attention.head_count": m.num_heads,
            f"{m.architecture}.attention.head_count_kv": m.num_kv_heads, f"{m.architecture}.vocab_size": m.vocab_size}
    return JSONResponse({"modelfile": "", "parameters": parameters,
                         "template": model.manifest.tokenizer.chat_template or "", "details": _details(model),
                         "model_info": info, "capabilities": ["completion"] if model.manifest.is_decoder
                         else ["embedding"], "modified_at": _file_facts(model).get("modified_at")})


# --- response pieces -------------------------------------------------------------------------


def _done(model: str, content: dict, reason: str, timings=None, started: float | None = None) -> dict:
    """The last object: the finish reason and Ollama's counts and durations (nanoseconds)."""
    done = {"model": model, "created_at": _now(), **content, "done": True, "done_reason": reason}
    if timings is None:
        return done
    note_tokens(timings.prompt_tokens, timings.completion_tokens)
    return {**done, "total_duration": _ns(started), "load_duration": 0,
            "prompt_eval_count": timings.prompt_tokens, "prompt_eval_duration": _rate_ns(timings.prompt_tokens,
                                                                                       timings.prefill_tok_s),
            "eval_count": timings.completion_tokens, "eval_duration": _rate_ns(timings.completion_tokens,
                                                                             timings.decode_tok_s)}


def _details(model) -> dict:
    m, q = model.manifest.model, model.manifest.quantization
    return {"parent_model": "", "format": "onnx", "family": m.architecture, "families": [m.architecture],
            "parameter_size": "", "quantization_level": q.scheme}


def _file_facts(model) -> dict:
    """Size, time and digest of the bundle the model was opened from (nothing if unknown)."""
    path = getattr(model, "path", None)
    if path is None:
        return {}
    manifest = path / "manifest.json"
    modified = datetime.fromtimestamp(manifest.stat().st_mtime, timezone.utc).isoformat()
    size = sum((path / name).stat().st_size for name in model.manifest.files) + manifest.stat().st_size
    return {"size": size, "modified_at": modified, "digest": hashlib.sha256(manifest.read_bytes()).hexdigest()}


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ns(started: float | None) -> int:
    return 0 if started is None else int((time.perf_counter() - started) * 1e9)


def _rate_ns(tokens: int, per_second: float) -> int:
    return int(tokens / per_second * 1e9) if per_second else 0


ROUTES = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/tags", tags),
    Route("/api/show", show, methods=["POST"]),
]
server.ROUTES.extend(ROUTES)  # every app create_app makes answers both APIs
