"""`edge serve` through the real `openai` client and raw HTTP on a loopback port.

Oracle: the same bundle loaded with `edge.load` and asked directly (greedy, or sampled with
the same seed). The server runs in a thread (tests/server_thread.py); only loopback
connections are allowed.
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import openai
import pytest

import edge
from edge.server.app import create_app
from edge.server.worker import Job, ShuttingDown
from server_thread import running

MODEL = "tiny"
ENCODER = "tiny-bert"
HELLO = [{"role": "user", "content": "Tell me about the sea."}]


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


@pytest.fixture(scope="module")
def encoder(tiny_bert_bundle_fp32):
    return edge.load(tiny_bert_bundle_fp32)


@pytest.fixture(scope="module")
def url(tiny_llama_bundle_fp32, tiny_bert_bundle_fp32):
    models = {MODEL: edge.load(tiny_llama_bundle_fp32), ENCODER: edge.load(tiny_bert_bundle_fp32)}
    with running(create_app(models, max_body=64_000)) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def _last(chunks) -> edge.StreamChunk:
    return list(chunks)[-1]


# --- chat and completions against the oracle ------------------------------------------


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list()] == [MODEL, ENCODER]
    status, body = _http(url, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert [(m["id"], m["task"]) for m in body["models"]] == [(MODEL, "text-generation"),
                                                              (ENCODER, "feature-extraction")]


def test_chat_greedy_matches_edge(client, lm):
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    want = list(lm.stream_chat(HELLO, max_tokens=12))
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "".join(c.text for c in want)
    assert choice.finish_reason == want[-1].finish_reason
    assert reply.object == "chat.completion" and reply.model == MODEL and reply.id.startswith("chatcmpl-")
    assert abs(reply.created - time.time()) < 600
    assert reply.usage.prompt_tokens == len(lm.encode_chat(HELLO))
    assert reply.usage.completion_tokens == want[-1].timings.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_with_usage(client, lm):
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == lm.chat(HELLO, max_tokens=10)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [_last(lm.stream_chat(HELLO, max_tokens=10)).finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10  # the tiny model never stops early
    assert chunks[-1].usage.prompt_tokens == len(lm.encode_chat(HELLO))


def test_sampling_options_reach_the_sampler(client, lm):
    options = dict(temperature=0.8, top_p=0.9, seed=7, max_tokens=16)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, **options)
    assert reply.choices[0].message.content == lm.chat(HELLO, **options)
    extras = dict(top_k=5, min_p=0.05, repetition_penalty=1.3)  # edge's extra sampling fields
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, extra_body=extras, **options)
    assert reply.choices[0].message.content == lm.chat(HELLO, **options, **extras)


def test_stop_string(client, lm):
    full = lm.chat(HELLO, max_tokens=24)
    stop = full[len(full) // 2:][:3]
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stop=[stop])
    assert reply.choices[0].message.content == full[: full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_completions(client, lm):
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=9, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == lm.generate("Once upon a time", raw=True, max_tokens=9)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == len(lm.encode_text("Once upon a time"))
    stream = client.completions.create(model=MODEL, prompt=["Once upon a time"], max_tokens=9, temperature=0,
                                       stream=True)
    assert "".join(c.choices[0].text for c in stream) == reply.choices[0].text


def test_default_max_tokens_fits_the_context(client, lm):
    """Without max_tokens a long prompt still gets an answer: as many tokens as fit."""
    prompt = "word " * 240
    reply = client.completions.create(model=MODEL, prompt=prompt, temperature=0)
    room = lm.decoder.context_length - len(lm.encode_text(prompt))
    assert reply.usage.completion_tokens == room
    assert reply.choices[0].text == lm.generate(prompt, raw=True, max_tokens=room)


# --- embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_match_edge(client, encoder, encoding):
    texts = ["a cat sat on the mat", "Ünïcode and emoji 🙂", "x"]
    reply = client.embeddings.create(model=ENCODER, input=texts, encoding_format=encoding)
    if encoding == "base64":  # asked for explicitly, the client hands the string back as it came
        got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in reply.data])
    else:
        got = np.array([d.embedding for d in reply.data], dtype=np.float32)  # (3, dim)
    np.testing.assert_allclose(got, encoder.embed(texts), rtol=1e-6, atol=1e-6)
    assert [d.index for d in reply.data] == [0, 1, 2] and reply.model == ENCODER
    assert reply.usage.prompt_tokens == sum(len(e.ids) for e in encoder.tokenize(texts))


def test_embeddings_of_one_string_and_by_default(client, encoder):
    """A bare string is one input; the client's default (base64, decoded by the client) gives floats."""
    reply = client.embeddings.create(model=ENCODER, input="hello world")
    assert len(reply.data) == 1
    np.testing.assert_allclose(np.asarray(reply.data[0].embedding, dtype=np.float32),
                               encoder.embed(["hello world"])[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, status, param", [
    (dict(input=[]), 400, "input"),
    (dict(input=["ok", ""]), 400, "input"),
    (dict(input=[[1, 2, 3]]), 400, "input"),
    (dict(encoding_format="int8"), 400, "encoding_format"),
    (dict(dimensions=7), 400, "dimensions"),
    (dict(model=MODEL), 400, "model"),
    (dict(model="nope"), 404, "model"),
])
def test_embedding_errors(client, kwargs, status, param):
    with pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(**(dict(model=ENCODER, input="hi", encoding_format="float") | kwargs))
    assert info.value.status_code == status and info.value.body["param"] == param


def test_chat_with_an_embedding_model_is_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=ENCODER, messages=HELLO)
    assert "/v1/embeddings" in info.value.body["message"]


# --- user errors: 4xx with OpenAI's error object, and the server goes on -------------


@pytest.mark.parametrize("kwargs, status, param, code", [
    (dict(model="nope"), 404, "model", "model_not_found"),
    (dict(max_tokens=10_000), 400, "max_tokens", "context_length_exceeded"),
    (dict(top_p=1.5), 400, "top_p", None),
    (dict(temperature=-1), 400, "temperature", None),
    (dict(seed=-3), 400, "seed", None),
    (dict(max_tokens=0), 400, "max_tokens", None),
    (dict(n=2), 400, "n", None),
    (dict(stop=[""]), 400, "stop", None),
    (dict(extra_body={"top_k": "five"}), 400, "top_k", None),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0]", None),
    (dict(messages=[]), 400, "messages", None),
])
def test_chat_errors(client, kwargs, status, param, code):
    request = dict(model=MODEL, messages=HELLO, max_tokens=4, temperature=0) | kwargs
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**request)
    error = info.value.body
    assert info.value.status_code == status and set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == code and "--" not in error["message"]
    assert client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices  # still serving


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_context_window(client, stream):
    """Refused with a 400 before any stream starts."""
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="word " * 400, max_tokens=1, stream=stream)
    assert info.value.body["code"] == "context_length_exceeded"
    assert "context window of 256 tokens" in info.value.body["message"]


@pytest.mark.parametrize("body, status, fragment", [
    (b'{"model": "tiny", "messages": [', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "`model` is required"),
    (b'{"model": "tiny", "messages": "hi"}', 400, "`messages` must be an array"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": 3}]}', 400, "content"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', 400, "`stream`"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "temperature"),
    (b"[" * 30_000 + b"]" * 30_000, 400, "not valid JSON"),  # nested too deep for the parser
    (b'{"model": "tiny", "prompt": "' + b"x" * 70_000 + b'"}', 413, "larger than 64000 bytes"),
])
def test_malformed_requests(url, body, status, fragment):
    path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    got, error = _http(url, "POST", path, body)
    assert got == status and fragment in error["error"]["message"], error
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert _http(url, "GET", "/health")[0] == 200


def test_unknown_route_and_method(url):
    assert _http(url, "GET", "/v1/nothing")[0] == 404
    status, error = _http(url, "GET", "/v1/chat/completions")
    assert status == 405 and error["error"]["message"].startswith("GET is not allowed")


# --- authentication ----------------------------------------------------------------------


def test_api_key(tiny_llama_bundle_fp32):
    with running(create_app({MODEL: edge.load(tiny_llama_bundle_fp32)}, api_key="s3cret")) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, error = _http(base, "GET", "/v1/models", headers=headers)
            assert status == 401 and error["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3).choices[0].message.content


# --- load: concurrency, queue limit ---------------------------------------------------


def test_concurrent_clients_get_sequential_answers(client, lm):
    """8 clients x 5 requests at once, mixed streaming: each answer equals a sequential run."""
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(8)]
    want = {p: lm.chat([{"role": "user", "content": p}], max_tokens=12) for p in prompts}

    def one_client(prompt: str) -> list[str]:
        answers = []
        for r in range(5):
            messages = [{"role": "user", "content": prompt}]
            if r % 2:
                stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                                        stream=True)
                answers.append("".join(c.choices[0].delta.content or "" for c in stream))
            else:
                reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
                answers.append(reply.choices[0].message.content)
        return answers

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(prompts, pool.map(one_client, prompts)))
    assert all(results[p] == [want[p]] * 5 for p in prompts)


def test_full_queue_is_refused_at_once(tiny_llama_bundle_fp32, lm):
    app = create_app({MODEL: edge.load(tiny_llama_bundle_fp32)}, max_queue=1)
    worker = app.state.workers[MODEL]
    gate, done = threading.Event(), []

    def held(model):  # occupies the worker until the test opens the gate
        gate.wait(30)
        yield "released"

    with running(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        worker.submit(Job(held, done.append))
        _wait_for(lambda: worker.busy)  # else the held job itself is the one queued, and the chat below fits
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.chat.completions.create, model=MODEL, messages=HELLO, max_tokens=5,
                                  temperature=0)
            _wait_for(lambda: worker.queued == 1)
            with pytest.raises(openai.RateLimitError) as info:  # at once: a queued request would wait for the gate
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
            assert info.value.body["code"] == "queue_full" and info.value.response.headers["retry-after"] == "1"
            assert _http(base, "GET", "/health")[1]["models"][0]["queued"] == 1  # still answering
            gate.set()
            assert waiting.result().choices[0].message.content == lm.chat(HELLO, max_tokens=5)
    assert done[0] == "released"


def test_a_request_waiting_when_the_server_stops_gets_503(tiny_llama_bundle_fp32):
    """The worker closing (server shutdown) answers a queued request 503 with a clear message."""
    app = create_app({MODEL: edge.load(tiny_llama_bundle_fp32)}, max_queue=2)
    worker = app.state.workers[MODEL]
    gate = threading.Event()

    def held(model):  # occupies the worker until the test opens the gate
        gate.wait(30)
        yield "released"

    with running(app) as base:
        worker.submit(Job(held, lambda item: None))
        _wait_for(lambda: worker.busy)  # the held job runs: the request below is the one queued
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(_http, base, "POST", "/v1/chat/completions",
                                  json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 3}).encode())
            _wait_for(lambda: worker.queued == 1)
            closing = pool.submit(worker.close)  # joins the worker thread: it waits for the held job
            status, body = waiting.result(timeout=30)
            gate.set()
            closing.result(timeout=30)
    assert status == 503 and body["error"]["code"] == "shutting_down"
    assert body["error"]["message"].startswith("the server is shutting down") and "\n" not in body["error"]["message"]


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_job_submitted_after_close_is_answered(tiny_llama_bundle_fp32, parallel):
    """A job that reaches a worker after close drained its queue gets ShuttingDown at once
    (it used to sit behind the worker's end marker, its client waiting for ever)."""
    app = create_app({MODEL: edge.load(tiny_llama_bundle_fp32)}, max_queue=2, parallel=parallel)
    worker = app.state.workers[MODEL]
    worker.close()
    got = []
    worker.submit(Job(lambda model: iter(["never"]), got.append))
    assert len(got) == 1 and isinstance(got[0], ShuttingDown)


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("host, key, warns", [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
    ("0.0.0.0", None, True), ("192.168.1.5", None, True), ("example.org", None, True), ("0.0.0.0", "k", False),
])


def test_exposure_warning(host, key, warns):
    from edge.cli.serve import exposure_warning

    warning = exposure_warning(host, key)
    assert (warning is not None) == warns
    assert warning is None or ("--api-key" in warning and host in warning)


def test_serve_without_the_extra(tiny_llama_bundle_fp32, monkeypatch, capsys):
    from edge.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the `serve` extra were not installed
    assert main(["serve", "-m", str(tiny_llama_bundle_fp32)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: edge serve needs the `serve` extra (uvicorn is not installed). "
                   "Install it with: pip install 'edge-runtime[serve]'.")


# --- helpers ------------------------------------------------------------------------------


def _http(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON body) over a raw HTTP connection."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# --- the request log: one line per request, no prompt text --------------------------------


def test_request_log_lines(lm, encoder):
    import io
    import re

    log = io.StringIO()
    with running(create_app({MODEL: lm, ENCODER: encoder}, log=log)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        secret = [{"role": "user", "content": "my secret prompt"}]
        reply = client.chat.completions.create(model=MODEL, messages=secret, max_tokens=5, temperature=0)
        list(client.chat.completions.create(model=MODEL, messages=secret, max_tokens=5, temperature=0, stream=True))
        client.embeddings.create(model=ENCODER, input=["my secret text"])
        assert _http(base, "GET", "/nowhere")[0] == 404
    lines = log.getvalue().splitlines()
    usage = reply.usage
    assert re.fullmatch(rf"POST /v1/chat/completions 200 tokens {usage.prompt_tokens}\+5 \d+\.\d{{3}}s", lines[0])
    assert re.fullmatch(rf"POST /v1/chat/completions 200 tokens {usage.prompt_tokens}\+5 \d+\.\d{{3}}s", lines[1])
    assert re.fullmatch(r"POST /v1/embeddings 200 tokens \d+\+0 \d+\.\d{3}s", lines[2])
    assert re.fullmatch(r"GET /nowhere 404 \d+\.\d{3}s", lines[3]) and len(lines) == 4
    assert "secret" not in log.getvalue()


@pytest.mark.parametrize("quiet", [False, True])
def test_serve_quiet_turns_the_log_off(tiny_llama_bundle_fp32, monkeypatch, quiet):
    import uvicorn

    from edge.cli import main
    from edge.server.request_log import RequestLog

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    assert main(["serve", "-m", str(tiny_llama_bundle_fp32), *(["--quiet"] if quiet else [])]) == 0
    assert any(m.cls is RequestLog for m in served[0].user_middleware) != quiet
