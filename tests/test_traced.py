"""The traced fallback: causal LMs without a native graph builder (tiny random GPT-NeoX with
partial rotary and parallel residual, Phi-3 with grouped-query attention) are exported
through torch.onnx, picked automatically, and run by the same runtime; transformers is the
oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edge
from edge.bundle import open_bundle
from edge.cli import main
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import ExportError
from export.graph.traced import BUILDER
from export.pipeline import export_model
from hf_oracle import hf_causal_lm, hf_logits

ARCHS = ["gpt_neox", "phi3"]


def _config(arch: str):
    from transformers import GPTNeoXConfig, Phi3Config

    shape = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=256, bos_token_id=0, eos_token_id=0)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**shape, rotary_pct=0.5)
    return Phi3Config(**shape, num_key_value_heads=2, pad_token_id=0)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, gpt2_style_tokenizer_json, tmp_path_factory):
    """(HF folder, fp32 bundle, int8 bundle) for one architecture edge does not build natively."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    AutoModelForCausalLM.from_config(_config(request.param)).eval().save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_file=str(gpt2_style_tokenizer_json), eos_token="<|endoftext|>").save_pretrained(folder)
    bundles = tmp_path_factory.mktemp(f"{request.param}-bundles")
    for quantize in ("none", "int8"):
        export_model(str(folder), bundles / quantize, quantize=quantize)
    return folder, bundles / "none", bundles / "int8"


def _ids(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 1000, n).tolist()


def test_fallback_is_chosen_and_recorded(tiny, capsys):
    folder, fp32, int8 = tiny
    manifest = open_bundle(int8).manifest
    assert manifest.graph.builder == BUILDER and not manifest.graph.kv.shared_buffer
    assert manifest.graph.inputs[:2] == ("input_ids", "logits_to_keep")
    assert manifest.quantization.scheme == "int8" and "embeddings float32" in manifest.quantization.method
    assert main(["info", str(int8)]) == 0
    assert f"built by {BUILDER}" in capsys.readouterr().out


def test_fp32_logits_match_transformers_fed_in_chunks(tiny):
    folder, fp32, _ = tiny
    decoder = DecoderRunner.open(open_bundle(fp32))
    ids = _ids(40, seed=1)
    chunks = [decoder.logits(ids[:17]), decoder.logits(ids[17:18]), decoder.logits(ids[18:])]  # through the cache
    np.testing.assert_allclose(np.concatenate(chunks), hf_logits(folder, ids), atol=1e-4, rtol=0)


def test_int8_logits_close_to_transformers(tiny):
    folder, _, int8 = tiny
    ids = _ids(40, seed=2)
    got, want = DecoderRunner.open(open_bundle(int8)).logits(ids), hf_logits(folder, ids)
    error = np.abs(got - want).mean() / np.abs(want).mean()
    assert error < 0.05, f"int8 logits differ from fp32 by {error:.1%} on average"
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_greedy_generation_matches_transformers(tiny):
    folder, fp32, _ = tiny
    model = edge.load(fp32)
    prompt = _ids(8, seed=3)
    out = [int(model.decoder.prefill(prompt).argmax())]
    while len(out) < 16:
        out.append(int(model.decoder.decode_step(out[-1]).argmax()))
    hf = hf_causal_lm(folder)
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert out == want[0, len(prompt):].tolist()
    assert np.isfinite(model.perplexity("the quick brown fox jumps over the lazy dog"))


def test_non_causal_architectures_still_fail_clearly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(ExportError, match=r"architecture 't5' is not supported. edge exports: Llama family.*traced"):
        export_model(str(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
