"""The batched decoder against transformers (the oracle): sequences of different lengths
sharing one KV buffer, prefilled at batch 1 between batched decode steps, each get the
logits transformers gives that sequence alone."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import open_bundle
from edge.engine.batch_runner import BatchRunner
from edge.engine.decoder_runner import PREFILL_CHUNK, DecoderRunner, prefill_blocks
from edge.errors import ContextWindowError, InputError
from hf_oracle import hf_logits

def _runner(request, arch: str, quant: str = "fp32", slots: int = 4, capacity: int = 200) -> BatchRunner:
    decoder = DecoderRunner.open(open_bundle(request.getfixturevalue(f"{arch}_bundle_{quant}")))
    if not decoder.manifest.graph.kv.shared_buffer:
        pytest.fail(f"{arch} exports a concatenated cache: batching needs the fused graph")
    return BatchRunner(decoder, slots, capacity)


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def test_interleaved_slots_match_transformers(request):
    """Slot 1 joins while 0 decodes, slot 2 starts later with a two-block prompt, slot 0
    leaves mid-run (its row then carries pads): every decoded position equals the oracle."""
    arch = "tiny_llama"
    runner = _runner(request, arch)
    vocab = runner.model.vocab_size
    prompts = {0: _ids(7, vocab, 0), 1: _ids(30, vocab, 1), 2: _ids(PREFILL_CHUNK + 9, vocab, 2)}
    steps = 12
    fed = {slot: list(p) for slot, p in prompts.items()}  # what each slot will have run, in order
    cont = {slot: _ids(steps, vocab, 10 + slot) for slot in prompts}  # teacher-forced continuations
    got = {slot: [] for slot in prompts}  # logits rows after each decoded token
    start = {0: 0, 1: 3, 2: 5}  # the step at which each slot's prompt starts
    leave = {0: 8}  # slot 0 stops after 8 steps
    pending = {}
    for step in range(steps + 6):
        for slot, when in start.items():
            if when == step:
                pending[slot] = [list(b) for b in np.split(np.array(prompts[slot]),
                                                           np.cumsum(prefill_blocks(len(prompts[slot])))[:-1])]
        for slot in list(pending):  # at most one block per slot per step
            runner.prefill(slot, pending[slot].pop(0))
            if not pending[slot]:
                del pending[slot]
        tokens = []
        for slot in range(3):
            done = len(got[slot])
            active = (slot not in pending and start[slot] <= step and done < leave.get(slot, steps)
                      and runner.length(slot) >= len(prompts[slot]))
            tokens.append(cont[slot][done] if active else None)
        if any(t is not None for t in tokens):
            rows = runner.decode(tokens)  # (3, vocab)
            for slot, token in enumerate(tokens):
                if token is not None:
                    got[slot].append(rows[slot])
                    fed[slot].append(token)
    for slot, rows in got.items():
        assert len(rows) == leave.get(slot, steps)
        assert runner.length(slot) == len(fed[slot])
        expected = hf_logits(request.getfixturevalue(f"{arch}_dir"), fed[slot])[len(prompts[slot]):]
        np.testing.assert_allclose(np.stack(rows), expected, atol=1e-3, rtol=0)


def test_rewound_slot_reuses_its_prefix(request):
    """A slot rewound to a common prefix and fed the rest equals a fresh run (prompt reuse)."""
    runner = _runner(request, "tiny_llama")
    vocab = runner.model.vocab_size
    first, second = _ids(40, vocab, 3), _ids(40, vocab, 3)[:25] + _ids(10, vocab, 4)
    runner.prefill(1, first)
    runner.rewind_to(25, 1)
    reused = runner.prefill(1, second[25:])
    fresh = runner.prefill(2, second)
    np.testing.assert_allclose(reused, fresh, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fresh, hf_logits(request.getfixturevalue("tiny_llama_dir"), second)[-1], atol=1e-3,
                               rtol=0)


def test_copied_prefix_equals_its_prefill(request):
    """A slot given another slot's first 25 tokens (copy_prefix, over a longer stale run of its
    own) and fed the rest equals transformers on the whole prompt, and so do its decode steps."""
    runner = _runner(request, "tiny_llama")
    vocab = runner.model.vocab_size
    first, second = _ids(40, vocab, 3), _ids(40, vocab, 3)[:25] + _ids(10, vocab, 4)
    runner.prefill(1, first)
    runner.prefill(3, _ids(50, vocab, 5))  # stale entries past the copied rows must not be read
    runner.copy_prefix(1, 3, 25)
    assert runner.length(3) == 25 and runner.length(1) == 40
    rows = [runner.prefill(3, second[25:])]
    decoded = runner.decode([None, 7, None, 9])  # slot 1 decodes beside it
    rows.append(decoded[3])
    oracle = request.getfixturevalue("tiny_llama_dir")
    np.testing.assert_allclose(np.stack(rows), hf_logits(oracle, second + [9])[-2:], atol=1e-3, rtol=0)
    np.testing.assert_allclose(decoded[1], hf_logits(oracle, first + [7])[-1], atol=1e-3, rtol=0)  # source intact
    with pytest.raises(ValueError):
        runner.copy_prefix(1, 2, 42)  # more than slot 1 holds


def test_learned_positions_are_refused(request):
    """GPT-2's graph slices its position rows from the longest sequence: one range for the batch."""
    decoder = DecoderRunner.open(open_bundle(request.getfixturevalue("tiny_gpt2_bundle_fp32")))
    with pytest.raises(InputError, match="rotary"):
        BatchRunner(decoder, 2, 64)


def test_a_full_slot_refuses_more(request):
    runner = _runner(request, "tiny_llama", capacity=20)
    runner.prefill(0, list(range(20)))
    with pytest.raises(ContextWindowError) as info:
        runner.decode([5])
    assert info.value.param == "max_tokens"
    assert runner.length(0) == 20  # nothing committed


def test_int8_batched_agrees_with_solo(request):
    """The quantized graph at batch 3 against batch 1: same argmax, logits within int8 noise."""
    runner = _runner(request, "tiny_llama", "int8", slots=3)
    solo = DecoderRunner.open(open_bundle(request.getfixturevalue("tiny_llama_bundle_int8")))
    vocab = runner.model.vocab_size
    prompts = [_ids(n, vocab, n) for n in (5, 17, 33)]
    for slot, p in enumerate(prompts):
        runner.prefill(slot, p)
    tokens = [p[-1] for p in prompts]
    batched = runner.decode(tokens)  # (3, vocab)
    for slot, p in enumerate(prompts):
        solo.reset()
        solo.prefill(p)
        np.testing.assert_allclose(batched[slot], solo.decode_step(tokens[slot]), atol=2e-3, rtol=0)
