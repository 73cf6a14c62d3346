"""Default sampling from the bundle: the source's generation_config.json goes into the
manifest at export; generate, chat sessions and the server use it for every option the
caller leaves out; without one, greedy. `edge info` says which."""

from __future__ import annotations

import json

import pytest

import edge
from edge.cli import main
from edge.manifest import Manifest, Sampling

RECOMMENDED = dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.1)


def test_generation_config_round_trip(tiny_gpt2_bundle_sampling, tiny_gpt2_bundle_fp32):
    manifest = Manifest.read(tiny_gpt2_bundle_sampling)
    assert manifest.sampling == Sampling(source="generation_config.json", min_p=None, **RECOMMENDED)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    assert Manifest.read(tiny_gpt2_bundle_fp32).sampling is None  # no do_sample: nothing recommended


def test_a_bundle_without_the_field_still_loads(tiny_gpt2_bundle_fp32):
    data = json.loads((tiny_gpt2_bundle_fp32 / "manifest.json").read_text())
    data.pop("sampling", None)
    assert Manifest.from_dict(data).sampling is None
    data["sampling"] = {"source": "generation_config.json", "temperature": "hot"}
    with pytest.raises(edge.EdgeError, match="sampling.temperature must be a number"):
        Manifest.from_dict(data)


def test_generation_uses_the_recommendation_for_what_is_left_out(tiny_gpt2_bundle_sampling):
    lm = edge.load(tiny_gpt2_bundle_sampling)
    by_default = lm.generate("Once", raw=True, max_tokens=12, seed=5)
    assert by_default == lm.generate("Once", raw=True, max_tokens=12, seed=5, **RECOMMENDED)
    assert lm.generate("Once", raw=True, max_tokens=12, seed=5, top_p=1.0) == lm.generate(
        "Once", raw=True, max_tokens=12, seed=5, top_p=1.0, temperature=0.7, top_k=20, repetition_penalty=1.1)
    greedy = lm.generate("Once", raw=True, max_tokens=12, temperature=0)
    assert greedy == lm.generate("Once", raw=True, max_tokens=12, temperature=0, top_k=0, top_p=1.0,
                                 repetition_penalty=1.1)  # 0 is greedy; the recommended penalty still applies
    params = lm.sampling_params(top_p=0.5)
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.7, 20, 0.5, 0.0)


def test_without_a_recommendation_greedy(tiny_gpt2_bundle_fp32):
    lm = edge.load(tiny_gpt2_bundle_fp32)
    assert lm.sampling_params() == edge.generation.sampler.SamplingParams()


def test_info_says_which(tiny_gpt2_bundle_sampling, tiny_gpt2_bundle_fp32, capsys):
    assert main(["info", str(tiny_gpt2_bundle_sampling)]) == 0
    assert ("sampling: from generation_config.json: temperature 0.7, top_k 20, top_p 0.9, "
            "repetition_penalty 1.1") in capsys.readouterr().out
    assert main(["info", str(tiny_gpt2_bundle_fp32)]) == 0
    assert "sampling: greedy (the source recommends none)" in capsys.readouterr().out


def test_the_server_defaults_to_the_bundle(tiny_gpt2_bundle_sampling, tiny_gpt2_bundle_fp32):
    import openai

    from edge.server.app import create_app
    from server_thread import running

    sampled, greedy = edge.load(tiny_gpt2_bundle_sampling), edge.load(tiny_gpt2_bundle_fp32)
    with running(create_app({"sampled": sampled, "greedy": greedy})) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        for name, lm in (("sampled", sampled), ("greedy", greedy)):
            reply = client.completions.create(model=name, prompt="Once", max_tokens=10, seed=3)
            assert reply.choices[0].text == lm.generate("Once", raw=True, max_tokens=10, seed=3)
        want = greedy.generate("Once", raw=True, max_tokens=10, temperature=0)
        assert client.completions.create(model="greedy", prompt="Once", max_tokens=10).choices[0].text == want


def test_the_recommendation_changes_the_output(tiny_gpt2_bundle_sampling):
    lm = edge.load(tiny_gpt2_bundle_sampling)
    sampled = {lm.generate("Once", raw=True, max_tokens=12, seed=s) for s in range(4)}
    assert lm.generate("Once", raw=True, max_tokens=12, temperature=0) not in sampled or len(sampled) > 1
