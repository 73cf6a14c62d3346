"""`edge serve --parallel`: concurrent requests decoded together, through the real `openai`
client on loopback. Oracle: the same bundle asked directly, one request at a time."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest

import edge
from edge.server.app import create_app
from edge.server.worker import Job
from server_thread import running
from test_serve import _http, _wait_for

MODEL, ENCODER = "tiny", "tiny-bert"


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def _ask(client, i: int) -> str:
    """Request i: chat or completion, streamed or not, greedy or seeded, of its own length."""
    options = dict(max_tokens=8 + 3 * i, temperature=(0.9 if i % 2 else 0.0), seed=i)
    if i % 3 == 0:
        return client.completions.create(model=MODEL, prompt=f"Story {i}: once upon a time", **options).choices[0].text
    messages = [{"role": "user", "content": f"Tell me about number {i}." * (1 + i % 4)}]
    if i % 3 == 1:
        return client.chat.completions.create(model=MODEL, messages=messages, **options).choices[0].message.content
    chunks = client.chat.completions.create(model=MODEL, messages=messages, stream=True, **options)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _solo(lm, i: int) -> str:
    options = dict(max_tokens=8 + 3 * i, temperature=(0.9 if i % 2 else 0.0), seed=i)
    if i % 3 == 0:
        return lm.generate(f"Story {i}: once upon a time", raw=True, **options)
    return lm.chat([{"role": "user", "content": f"Tell me about number {i}." * (1 + i % 4)}], **options)


def test_concurrent_requests_get_their_solo_answers(lm, tiny_bert_bundle_fp32):
    """12 clients at once on 4 slots (the rest wait in the queue), embeddings beside them."""
    encoder = edge.load(tiny_bert_bundle_fp32)
    app = create_app({MODEL: lm, ENCODER: encoder}, parallel=4, kv_tokens=4 * 256)
    with running(app) as base:
        client = _client(base)
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: _ask(client, i), range(12)))
            vectors = client.embeddings.create(model=ENCODER, input=["a cat", "a dog"])
        health = _http(base, "GET", "/health")[1]["models"]
    assert answers == [_solo(lm, i) for i in range(12)]
    np.testing.assert_allclose([d.embedding for d in vectors.data], encoder.embed(["a cat", "a dog"]), atol=1e-5)
    assert health[0] | {"served": 0} == {"id": MODEL, "task": "text-generation", "busy": False, "queued": 0,
                                          "served": 0, "cancelled": 0, "slots": 4, "slots_busy": 0}
    assert health[0]["served"] == 12 and health[1]["slots"] == 1


def test_full_queue_is_refused_and_health_shows_slots(lm):
    """Both slots busy (a long job, and one holding the worker at its first token); one
    request waits in the queue; the next is 429."""
    app = create_app({MODEL: lm}, parallel=2, kv_tokens=2 * 256, max_queue=1)
    worker = app.state.workers[MODEL]
    gate, held, long = threading.Event(), [], []

    def hold(chunk):  # the worker thread waits here at the held jobs' first token
        held.append(chunk)
        gate.wait(30)

    ids = lm.encode_prompt("hold on", raw=True)
    with running(app) as base:
        client = _client(base)
        worker.submit(Job(lambda model: (ids, dict(max_tokens=100)), long.append))
        _wait_for(lambda: long)
        worker.submit(Job(lambda model: (ids, dict(max_tokens=3)), hold))
        _wait_for(lambda: held)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.completions.create, model=MODEL, prompt="Hi", max_tokens=4, temperature=0)
            _wait_for(lambda: worker.queued == 1)
            with pytest.raises(openai.RateLimitError) as info:
                client.completions.create(model=MODEL, prompt="Hi", max_tokens=4)
            assert info.value.body["code"] == "queue_full"
            health = _http(base, "GET", "/health")[1]["models"][0]
            assert (health["slots"], health["slots_busy"], health["queued"], health["busy"]) == (2, 2, 1, True)
            gate.set()
            assert waiting.result().choices[0].text == lm.generate("Hi", raw=True, max_tokens=4)


def test_a_client_leaving_frees_its_slot(lm):
    """A streamed request hung up after 3 events is cancelled at the next step; a request
    beside it runs to its solo answer."""
    app = create_app({MODEL: lm}, parallel=2, kv_tokens=2 * 256)
    worker = app.state.workers[MODEL]
    with running(app) as base:
        port = int(base.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 200, "temperature": 0, "stream": True}
        connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response, events = connection.getresponse(), 0
        with ThreadPoolExecutor(1) as pool:
            beside = pool.submit(_client(base).completions.create, model=MODEL, prompt="The sea", max_tokens=150,
                                 temperature=0)
            while events < 3:
                events += response.fp.readline().startswith(b"data: ")
            connection.sock.shutdown(socket.SHUT_RDWR)
            connection.close()
            _wait_for(lambda: worker.cancelled == 1)
            assert beside.result().choices[0].text == lm.generate("The sea", raw=True, max_tokens=150)
        _wait_for(lambda: worker.slots_busy == 0 and not worker.busy)
        assert worker.served == 1


def test_a_request_beyond_its_slot_is_a_400(lm):
    app = create_app({MODEL: lm}, parallel=4, kv_tokens=4 * 32)
    with running(app) as base:
        with pytest.raises(openai.BadRequestError) as info:
            _client(base).completions.create(model=MODEL, prompt="Hello there", max_tokens=40)
    assert info.value.body["param"] == "max_tokens" and "batch slot" in info.value.body["message"]
