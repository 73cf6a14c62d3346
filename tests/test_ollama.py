"""`edge serve`'s Ollama routes through the real `ollama` client (PyPI), on a loopback port.

Oracle: the same bundle loaded with `edge.load` and asked directly. Only loopback
connections are allowed.
"""

from __future__ import annotations

import json
from urllib.request import Request, urlopen

import numpy as np
import ollama
import pytest

import edge
from edge.server.app import create_app
from server_thread import running

HELLO = [{"role": "user", "content": "Tell me about the sea."}]


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


@pytest.fixture(scope="module")
def encoder(tiny_bert_bundle_fp32):
    return edge.load(tiny_bert_bundle_fp32)


@pytest.fixture(scope="module")
def url(lm, encoder):
    with running(create_app({"tiny": lm, "tiny-bert": encoder})) as base:
        yield base


@pytest.fixture
def client(url):
    return ollama.Client(host=url, timeout=60)


def test_generate_streams_and_answers_once(client, lm):
    want = lm.complete("Once upon a time", max_tokens=10)
    parts = list(client.generate(model="tiny", prompt="Once upon a time", options={"num_predict": 10}, stream=True))
    assert "".join(p.response for p in parts) == want.text
    last = parts[-1]
    assert last.done and not any(p.done for p in parts[:-1])
    assert (last.done_reason, last.prompt_eval_count, last.eval_count) == (want.finish_reason, want.prompt_tokens,
                                                                           want.completion_tokens)
    assert last.total_duration > 0 and last.eval_duration >= 0
    once = client.generate(model="tiny:latest", prompt="Once upon a time", options={"num_predict": 10})
    assert once.response == want.text and once.done


def test_generate_raw_system_and_sampling_options(client, lm):
    raw = client.generate(model="tiny", prompt="Once upon a time", raw=True, options={"num_predict": 8})
    assert raw.response == lm.generate("Once upon a time", raw=True, max_tokens=8)
    system = client.generate(model="tiny", prompt="Hi", system="Be brief.", options={"num_predict": 8})
    assert system.response == lm.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                      max_tokens=8)
    options = {"num_predict": 12, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
               "repeat_penalty": 1.1, "seed": 7, "stop": ["\n\n"], "num_ctx": 2048}  # num_ctx: ignored
    sampled = client.generate(model="tiny", prompt="Hi", options=options)
    assert sampled.response == lm.generate("Hi", max_tokens=12, temperature=0.8, top_k=40, top_p=0.9, min_p=0.05,
                                           repetition_penalty=1.1, seed=7, stop=["\n\n"])


def test_chat_streams_and_answers_once(client, lm):
    want = lm.chat(HELLO, max_tokens=12)
    parts = list(client.chat(model="tiny", messages=HELLO, options={"num_predict": 12}, stream=True))
    assert "".join(p.message.content for p in parts) == want
    assert parts[-1].done and parts[-1].message.role == "assistant"
    reply = client.chat(model="tiny", messages=HELLO, options={"num_predict": 12})
    assert reply.message.content == want and reply.done_reason in ("stop", "length")


def test_embed(client, encoder):
    one = client.embed(model="tiny-bert", input="a cat")
    assert np.allclose(one.embeddings, encoder.embed(["a cat"]), atol=1e-6)
    two = client.embed(model="tiny-bert", input=["a cat", "a dog"])
    assert np.allclose(two.embeddings, encoder.embed(["a cat", "a dog"]), atol=1e-6)
    assert two.prompt_eval_count > 0


def test_tags_and_show(client, lm, tiny_llama_bundle_fp32):
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"tiny", "tiny-bert"}
    assert models["tiny"].details.family == "llama" and models["tiny"].details.quantization_level == "none"
    assert models["tiny"].size > (tiny_llama_bundle_fp32 / "manifest.json").stat().st_size
    assert models["tiny"].modified_at is not None
    shown = client.show("tiny")
    assert shown.template == lm.manifest.tokenizer.chat_template
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == lm.manifest.model.context_length
    assert shown.details.family == "llama" and shown.capabilities == ["completion"]


def test_show_parameters_from_the_bundle(tiny_gpt2_bundle_sampling):
    with running(create_app({"g": edge.load(tiny_gpt2_bundle_sampling)})) as base:
        shown = ollama.Client(host=base, timeout=60).show("g")
    assert shown.parameters.splitlines() == ["temperature 0.7", "top_k 20", "top_p 0.9", "repeat_penalty 1.1"]


def test_errors_in_ollamas_shape(client, url):
    with pytest.raises(ollama.ResponseError) as exc:
        client.generate(model="nope", prompt="Hi")
    assert exc.value.status_code == 404 and "nope" in exc.value.error
    with pytest.raises(ollama.ResponseError) as exc:
        client.generate(model="tiny", prompt="Hi", options={"temperature": -1})
    assert exc.value.status_code == 400 and "temperature" in exc.value.error
    with pytest.raises(ollama.ResponseError) as exc:
        client.embed(model="tiny", input="a cat")  # a generation model
    assert exc.value.status_code == 400
    request = Request(f"{url}/api/generate", data=json.dumps({"model": "tiny", "prompt": ""}).encode())
    with urlopen(request, timeout=60) as response:  # an empty prompt only "loads" the model
        assert json.loads(response.read())["done_reason"] == "load"
