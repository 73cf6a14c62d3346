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


def test_a_gpt2_bundle_is_served_one_request_at_a_time(tiny_gpt2_bundle_fp32):
    """GPT-2's learned positions are one range per call, so its graph cannot batch slots of
    different lengths: --parallel falls back to the one-at-a-time worker, answers unchanged."""
    from edge.server.app import batch_refusal
    from edge.server.worker import Worker

    gpt2 = edge.load(tiny_gpt2_bundle_fp32)
    assert "rotary positions" in batch_refusal(gpt2)
    app = create_app({"gpt2": gpt2}, parallel=4)
    assert type(app.state.workers["gpt2"]) is Worker
    with running(app) as base:
        client = _client(base)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda i: client.completions.create(
                model="gpt2", prompt=f"Number {i}", max_tokens=6, temperature=0).choices[0].text, range(3)))
        health = _http(base, "GET", "/health")[1]["models"][0]
    assert answers == [gpt2.generate(f"Number {i}", raw=True, max_tokens=6) for i in range(3)]
    assert health["slots"] == 1 and health["served"] == 3


def test_serve_notes_a_bundle_that_cannot_batch(tiny_gpt2_bundle_fp32, tiny_llama_bundle_fp32, monkeypatch, capsys):
    """One start-up line names the GPT-2 bundle and why; the Llama bundle beside it batches."""
    import uvicorn

    from edge.cli import main
    from edge.server.batch_worker import BatchWorker

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    assert main(["serve", "-m", str(tiny_gpt2_bundle_fp32), "-m", str(tiny_llama_bundle_fp32), "--parallel", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    config = edge.load(tiny_llama_bundle_fp32).manifest.model
    slot_mb = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 4 * 256 / 1e6  # float32 K and V
    assert f"edge serve: {tiny_llama_bundle_fp32.name} decodes up to 2 requests together, each at most 256 tokens " \
           f"(prompt + reply; {slot_mb:.1f} MB of KV cache a slot, {2 * slot_mb:.0f} MB in all)" in err
    notes = [line for line in err if "one request at a time" in line]
    assert notes == [f"edge serve: {tiny_gpt2_bundle_fp32.name} runs one request at a time: batched generation "
                     "needs rotary positions; this gpt2 bundle has learned ones (one position range per call)."]
    workers = started[0].state.workers
    assert isinstance(workers[tiny_llama_bundle_fp32.name], BatchWorker)
    assert main(["serve", "-m", str(tiny_gpt2_bundle_fp32), "--parallel", "1"]) == 0
    assert "one request at a time" not in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [1, 4])
def test_ignore_eos_runs_to_max_tokens(lm, parallel):
    """A bundle whose EOS is the token it says first: the reply stops there, unless the body
    has "ignore_eos": true (llama-server's and vLLM's extension), then it is max_tokens long
    and its tokens are the decoder's own greedy ones (generate_tokens knows no EOS)."""
    from dataclasses import replace

    from edge.generation.generate import generate_tokens
    from edge.generation.model import LanguageModel
    from edge.generation.sampler import SamplingParams, make_sampler

    ids = lm.encode_prompt("Once upon a time", raw=True)
    greedy = list(generate_tokens(lm.decoder.fork(), ids, make_sampler(SamplingParams()), 12))
    manifest = replace(lm.manifest, tokenizer=replace(lm.manifest.tokenizer, eos_token_ids=(greedy[0],)))
    stops_at_once = LanguageModel(manifest, lm.tokenizer, lm.decoder, tokenizer_file=lm.tokenizer_file)
    app = create_app({MODEL: stops_at_once}, parallel=parallel, kv_tokens=4 * 64)
    with running(app) as base:
        client = _client(base)
        ask = dict(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0)
        plain = client.completions.create(**ask)
        ignoring = client.completions.create(**ask, extra_body={"ignore_eos": True})
        streamed = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=7, stream=True, stream_options={"include_usage": True},
                                                  extra_body={"ignore_eos": True})
        usage = [c.usage for c in streamed if c.usage][0]
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(**ask, extra_body={"ignore_eos": "yes"})
    assert (plain.choices[0].finish_reason, plain.usage.completion_tokens) == ("stop", 1)
    assert (ignoring.choices[0].finish_reason, ignoring.usage.completion_tokens) == ("length", 12)
    assert ignoring.choices[0].text == lm.tokenizer.decode(greedy)
    assert usage.completion_tokens == 7
    assert info.value.body["param"] == "ignore_eos" and "boolean" in info.value.body["message"]
