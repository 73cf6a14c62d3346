"""The decoder graph against transformers (the oracle) on tiny random GPT-2 and Llama models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge.bundle import open_bundle
from edge.engine.decoder_runner import PREFILL_CHUNK, DecoderRunner
from edge.errors import ContextWindowError, InputError
from edge.engine.kv_cache import SharedKVCache
from hf_oracle import hf_causal_lm, hf_logits

ARCHS = ["tiny_llama", "tiny_gpt2"]


def _decoder(request, arch: str, quant: str) -> DecoderRunner:
    return DecoderRunner.open(open_bundle(request.getfixturevalue(f"{arch}_bundle_{quant}")))


def _ids(decoder: DecoderRunner, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, decoder.model.vocab_size, n).tolist()


def _reference_logits(request, arch: str, ids: list[int]) -> np.ndarray:
    return hf_logits(request.getfixturevalue(f"{arch}_dir"), ids)


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_logits_match_transformers(request, arch):
    decoder = _decoder(request, arch, "fp32")
    ids = _ids(decoder, PREFILL_CHUNK * 2 + 5)  # runs in three blocks
    np.testing.assert_allclose(decoder.logits(ids), _reference_logits(request, arch, ids), atol=1e-3, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_step_by_step_equals_full_sequence(request, arch, quant):
    decoder = _decoder(request, arch, quant)
    prompt = PREFILL_CHUNK + 10  # a prompt run in two blocks, keeping only the last logits
    ids = _ids(decoder, prompt + 20, seed=1)
    full = decoder.logits(ids)  # (prompt + 20, vocab)
    decoder.reset()
    steps = [decoder.prefill(ids[:prompt])] + [decoder.decode_step(t) for t in ids[prompt:]]
    assert decoder.cache_length == len(ids)
    np.testing.assert_allclose(np.stack(steps), full[prompt - 1:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_grown_mid_generation_keeps_its_entries(request, arch):
    """A cache reserved for fewer tokens than come grows (new buffers, entries copied over)."""
    ids = _ids(_decoder(request, arch, "fp32"), 60, seed=3)
    full = _decoder(request, arch, "fp32").logits(ids)
    decoder = _decoder(request, arch, "fp32")
    decoder.reserve(20)
    steps = [decoder.prefill(ids[:15])] + [decoder.decode_step(t) for t in ids[15:]]
    assert isinstance(decoder.cache, SharedKVCache) and decoder.cache.capacity > 20
    np.testing.assert_allclose(np.stack(steps), full[14:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_logits_close_to_transformers(request, arch):
    decoder = _decoder(request, arch, "int8")
    ids = _ids(decoder, 40, seed=2)
    got, want = decoder.logits(ids), _reference_logits(request, arch, ids)
    error = np.abs(got - want).mean() / np.abs(want).mean()
    assert error < 0.05, f"int8 logits differ from fp32 by {error:.1%} on average"
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_greedy_continuation_matches_transformers_generate(request, arch):
    decoder = _decoder(request, arch, "fp32")
    prompt = _ids(decoder, 8, seed=3)
    out = [int(decoder.prefill(prompt).argmax())]
    while len(out) < 20:
        out.append(int(decoder.decode_step(out[-1]).argmax()))
    model = hf_causal_lm(request.getfixturevalue(f"{arch}_dir"))
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert out == want[0, len(prompt):].tolist()


def test_rewind_reuses_a_prefix(request):
    decoder = _decoder(request, "tiny_llama", "fp32")
    a, b, c = _ids(decoder, 12, 4), _ids(decoder, 5, 5), _ids(decoder, 7, 6)
    decoder.prefill(a + b)
    decoder.rewind_to(len(a))
    reused = decoder.prefill(c)
    decoder.reset()
    fresh = decoder.prefill(a + c)
    np.testing.assert_allclose(reused, fresh, atol=1e-5, rtol=0)


def test_context_window_and_bad_ids_are_clear_errors(request):
    decoder = _decoder(request, "tiny_gpt2", "fp32")
    with pytest.raises(ContextWindowError, match="context window of 256"):
        decoder.prefill([1] * 257)
    decoder.reset()
    with pytest.raises(InputError, match=r"token ids must be in \[0, 1000\)"):
        decoder.prefill([5, 1000])
    with pytest.raises(InputError, match="non-empty"):
        decoder.prefill([])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("arch", ARCHS)
def test_int8_decoding_maps_no_token_table(request, arch):
    """The rows are read with pread: the table file is never mapped, so looked-up rows and
    their neighbours do not join the resident set (what takes_rows is for)."""
    bundle = open_bundle(request.getfixturevalue(f"{arch}_bundle_int8"))
    decoder = DecoderRunner.open(bundle)
    token = int(decoder.prefill(_ids(decoder, 40)).argmax())
    decoder.decode_step(token)
    table = bundle.tensor_file(bundle.manifest.inspect.embedding).resolve()
    mapped = {line.split(maxsplit=5)[-1].strip() for line in open("/proc/self/maps") if "/" in line}
    assert table.name == "inspect.onnx.data" and str(table) not in mapped
    assert str(bundle.file("model.onnx.data").resolve()) in mapped  # the check can see a mapped file
