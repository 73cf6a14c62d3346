"""A hostile HTTP client against `edge serve`: every request gets a 4xx naming the field or
a normal answer, never a 5xx, and the server's log shows no traceback whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import pytest

import edge
import edge.server.app as server_app
from edge.server.app import _while_connected, create_app
from edge.server.schemas import ApiError
from server_thread import running

MODEL, ENCODER = "tiny", "tiny-bert"
HI = [{"role": "user", "content": "Hi"}]


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def server_log():
    """Warnings and errors uvicorn and asyncio log (they do not reach the root logger); enter
    it once the server runs, as uvicorn replaces its loggers' handlers when it starts."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "asyncio", "starlette")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture(scope="module")
def models(tiny_llama_bundle_fp32, tiny_bert_bundle_fp32):
    return {MODEL: edge.load(tiny_llama_bundle_fp32), ENCODER: edge.load(tiny_bert_bundle_fp32)}


@pytest.fixture(scope="module")
def url(models):
    with running(create_app(models)) as base:
        yield base


def _http(base: str, path: str, body: bytes | str | None, headers: dict | None = None, method: str = "POST"):
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        data = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
SURROGATE = json.dumps("a\ud800")  # JSON allows the escape; UTF-8 has no form for it

REFUSED = [  # (route, raw JSON body, status, param)
    (CHAT, f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": {SURROGATE}}}]}}', 400, "messages[0]"),
    (CHAT, f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": [{{"type": "text", "text": '
           f'{SURROGATE}}}]}}]}}', 400, "messages[0]"),
    (COMPLETIONS, f'{{"model": "{MODEL}", "prompt": {SURROGATE}}}', 400, "prompt"),
    (COMPLETIONS, f'{{"model": "{MODEL}", "prompt": [{SURROGATE}]}}', 400, "prompt"),
    (COMPLETIONS, f'{{"model": "{MODEL}", "prompt": "hi", "stop": [{SURROGATE}]}}', 400, "stop"),
    (EMBEDDINGS, f'{{"model": "{ENCODER}", "input": {SURROGATE}}}', 400, "input"),
    (EMBEDDINGS, f'{{"model": "{ENCODER}", "input": ["ok", {SURROGATE}]}}', 400, "input"),
    (CHAT, f'{{"model": {SURROGATE}, "messages": [{{"role": "user", "content": "hi"}}]}}', 404, "model"),
    (CHAT, f'{{"model": "{MODEL}", "messages": [{{"role": {SURROGATE}, "content": "hi"}}]}}', 400, "messages[0]"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "n": True}), 400, "n"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "n": 2}), 400, "n"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "n": "1"}), 400, "n"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "n": 1.0}), 400, "n"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "top_logprobs": 3}), 400, "top_logprobs"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "logprobs": True}), 400, "logprobs"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "response_format": {"type": "yaml"}}), 400,
     "response_format"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "response_format": {"type": "json_schema",
                                                                        "json_schema": {"schema": "any"}}}),
     400, "response_format"),
    (COMPLETIONS, json.dumps({"model": MODEL, "prompt": "hi", "response_format": "json"}), 400, "response_format"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "max_tokens": True}), 400, "max_tokens"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "stream": "yes"}), 400, "stream"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "temperature": "hot"}), 400, "temperature"),
    (CHAT, json.dumps({"model": MODEL, "messages": HI, "stop": [""]}), 400, "stop"),
    (CHAT, '{"model": "tiny", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, None),
    (CHAT, '{"model": "tiny", "max_tokens": ' + "9" * 5000 + "}", 400, None),
    (CHAT, "\xff\xfe", 400, None),
    (CHAT, "[1, 2]", 400, None),
]


@pytest.mark.parametrize("route,body,status,param", REFUSED, ids=[f"{r[0][4:]}-{i}" for i, r in enumerate(REFUSED)])
def test_hostile_request_is_a_4xx_naming_the_field(url, route, body, status, param):
    got, answer = _http(url, route, body.encode("utf-8", "surrogateescape") if body != "\xff\xfe" else b"\xff\xfe")
    assert got == status, answer
    assert answer["error"]["param"] == param and "\n" not in answer["error"]["message"]


def test_plain_text_response_format_is_accepted(url):
    status, answer = _http(url, CHAT, json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2,
                                                  "response_format": {"type": "text"}}))
    assert status == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("header,status", [
    ("Bearer s3cret", 200), ("bearer s3cret", 200), ("BEARER s3cret", 200), ("Bearer  s3cret ", 200),
    ("bearer wrong", 401), ("Basic s3cret", 401), ("s3cret", 401), ("Bearer", 401), ("", 401),
    ("Bearer s3cret\u00e9", 401),
])
def test_authorization_scheme_is_case_insensitive(models, header, status):
    with running(create_app(models, api_key="s3cret")) as base:
        got, answer = _http(base, "/v1/models", None, {"Authorization": header}, method="GET")
    assert got == status, answer


def test_cancelled_wait_is_499_not_invalid_state():
    """A client gone while the job's result is awaited: cancel() only schedules the
    cancellation, and asking the task for its result then raised InvalidStateError."""

    class Gone:
        async def receive(self):
            return {"type": "http.disconnect"}

    class FakeJob:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    async def never():
        await asyncio.sleep(3600)

    job = FakeJob()
    with pytest.raises(ApiError) as caught:
        asyncio.run(_while_connected(Gone(), job, never()))
    assert caught.value.status == 499 and job.cancelled


def test_non_streaming_client_that_hangs_up_leaves_no_traceback(models, monkeypatch):
    """Through a real socket: the worker stops, the server goes on, its log stays clean."""
    plain = server_app._stream

    def slow(*args):  # a few tokens a second, so the client is surely gone mid-generation
        for chunk in plain(*args):
            time.sleep(0.05)
            yield chunk

    monkeypatch.setattr(server_app, "_stream", slow)
    with running(create_app(models)) as base, server_log() as records:
        parts = urlsplit(base)
        body = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 100, "temperature": 0}).encode()
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while _http(base, "/health", None, method="GET")[1]["models"][0]["cancelled"] < 1:
            assert time.monotonic() < deadline, "the job was never cancelled"
            time.sleep(0.05)
        status, answer = _http(base, CHAT, json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2}))
        assert status == 200
        time.sleep(0.2)  # let the handler of the gone client finish and log, if it would
    problems = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]
