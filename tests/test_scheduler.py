"""Continuous batching on the tiny fp32 Llama: every request's chunks equal what the
one-at-a-time `stream` gives it (the oracle, itself checked against transformers in
test_generate), whatever runs beside it, joins or leaves."""

from __future__ import annotations

import numpy as np
import pytest

from edge.engine.batch_runner import BatchRunner
from edge.engine.decoder_runner import PREFILL_CHUNK
from edge.generation.scheduler import PREFILL_BUDGET
from edge.errors import ContextWindowError, InputError

WORDS = "the sky is blue because light scatters in air and red light passes while blue bounces around".split()


@pytest.fixture(scope="module")
def model(tiny_llama_bundle_fp32):
    import edge

    return edge.load(tiny_llama_bundle_fp32)


def _prompt(n_words: int, seed: int) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n_words))


# Mixed prompt lengths (one prompt runs in three blocks), greedy and seeded sampling,
# stop strings, EOS-free max_tokens of different sizes.
CASES = [
    (dict(max_tokens=20), 3),
    (dict(max_tokens=9, temperature=1.0, seed=1), 40),
    (dict(max_tokens=25, temperature=0.8, top_p=0.9, seed=2), PREFILL_CHUNK + 70),
    (dict(max_tokens=14, repetition_penalty=1.3), 12),
    (dict(max_tokens=30, temperature=1.2, top_k=50, seed=3, stop=["e"]), 25),
    (dict(max_tokens=6), 8),
    (dict(max_tokens=18, temperature=1.0, min_p=0.05, seed=4), 60),
]


def _solo(model, prompt: str, options: dict) -> list:
    return [(c.token, c.text, c.finish_reason) for c in model.stream(prompt, raw=True, **options)]


def _collector(store: dict, key):
    store[key] = []
    return lambda chunk: store[key].append((chunk.token, chunk.text, chunk.finish_reason))


@pytest.mark.parametrize("slots", [2, 3, 8])
def test_batched_equals_solo_with_joins_and_leaves(model, slots):
    """More requests than slots (later ones join as earlier ones finish), two more added
    mid-run, one cancelled mid-run: each finished request's chunks equal its solo run."""
    prompts = [_prompt(n, i) for i, (_, n) in enumerate(CASES)]
    scheduler = model.scheduler(slots=slots, kv_tokens=slots * 256)
    got: dict = {}
    for i, ((options, _), prompt) in enumerate(zip(CASES, prompts)):
        if i < 5:
            scheduler.add(model.request(model.encode_prompt(prompt, raw=True), _collector(got, i), **options))
    scheduler.add(model.request(model.encode_prompt(_prompt(30, 99), raw=True), _collector(got, "cancelled"),
                                max_tokens=40, cancelled=lambda: len(got["cancelled"]) >= 4))
    for _ in range(7):
        scheduler.step()
    for i in (5, 6):  # join mid-run
        scheduler.add(model.request(model.encode_prompt(prompts[i], raw=True), _collector(got, i), **CASES[i][0]))
    scheduler.run()
    assert len(got["cancelled"]) == 4 and got["cancelled"][-1][2] is None  # stopped, not finished
    for i, ((options, _), prompt) in enumerate(zip(CASES, prompts)):
        assert got[i] == _solo(model, prompt, options), f"request {i}"
    assert not scheduler.running and not scheduler.waiting


def test_generate_batch_in_order(model):
    prompts = [_prompt(n, n) for n in (5, 70, 2, 33, 9)]
    options = dict(max_tokens=12, temperature=0.9, seed=5)
    assert model.generate_batch(prompts, raw=True, slots=3, **options) == [
        model.generate(p, raw=True, **options) for p in prompts]


def _spy(runner, calls: list):
    """Record the runner's calls in order: ("prefill", slot, tokens), ("decode", m) and
    ("copy", source, slot, tokens)."""
    prefill, decode, copy = runner.prefill, runner.decode, runner.copy_prefix

    def spied_prefill(slot, ids):
        calls.append(("prefill", slot, len(ids)))
        return prefill(slot, ids)

    def spied_decode(tokens):
        calls.append(("decode", len(tokens)))
        return decode(tokens)

    def spied_copy(source, slot, n):
        calls.append(("copy", source, slot, n))
        return copy(source, slot, n)

    runner.prefill, runner.decode, runner.copy_prefix = spied_prefill, spied_decode, spied_copy


def test_long_prompt_is_read_between_decode_steps(model, monkeypatch):
    """A prompt longer than a step's prefill budget joining a running stream: its blocks run
    at most the budget a step, a call for the stream after each step's blocks (at batch 1
    while it decodes alone, batched after the last block), so it keeps getting tokens."""
    monkeypatch.setattr("edge.generation.scheduler.PREFILL_BUDGET", 2 * PREFILL_CHUNK)  # below the tiny context
    budget = 2 * PREFILL_CHUNK
    scheduler = model.scheduler(slots=2, kv_tokens=2 * 256)
    calls: list = []
    _spy_all(scheduler.runner, calls)
    got: dict = {}
    scheduler.add(model.request(model.encode_prompt("short", raw=True), _collector(got, 0), max_tokens=30,
                                draft="none"))
    scheduler.step()
    scheduler.step()
    long_ids = model.encode_prompt(_prompt(budget + 40, 7), raw=True)
    assert budget < len(long_ids) <= 2 * budget - PREFILL_CHUNK  # two steps
    scheduler.add(model.request(long_ids, _collector(got, 1), max_tokens=5))
    scheduler.run()
    first = next(i for i, c in enumerate(calls) if c[:2] == ("prefill", 1))
    groups, current = [], []  # the long prompt's blocks, step by step, and the call after each step's
    for call in calls[first:]:
        if call[:2] == ("prefill", 1):
            current.append(call[2])
        elif current:
            groups.append((current, call))
            current = []
    assert [size for blocks, _ in groups for size in blocks] == BatchRunner.blocks(len(long_ids))
    assert len(groups) == 2 and all(sum(blocks) <= budget for blocks, _ in groups)
    assert [after for _, after in groups] == [("logits", 0, 1), ("decode", 2)]
    assert got[0] == _solo(model, "short", dict(max_tokens=30))
    assert got[1] == [(c.token, c.text, c.finish_reason) for c in model.stream_ids(long_ids, max_tokens=5)]


def test_a_burst_of_prompts_is_read_within_the_budget(model):
    """Five prompts arriving at once while one stream runs: each step reads up to the budget
    (oldest first, whole blocks), so all five have their first token after a few steps."""
    scheduler = model.scheduler(slots=6, kv_tokens=6 * 256)
    calls: list = []
    _spy_all(scheduler.runner, calls)
    got: dict = {}
    scheduler.add(model.request(model.encode_prompt("running", raw=True), _collector(got, "running"), max_tokens=40))
    scheduler.step()
    prompts = [model.encode_prompt(_prompt(90, 20 + i), raw=True) for i in range(5)]
    for i, ids in enumerate(prompts):
        scheduler.add(model.request(ids, _collector(got, i), max_tokens=8))
    steps, total = 0, sum(len(ids) for ids in prompts)
    while not all(got[i] for i in range(5)):
        scheduler.step()
        steps += 1
    # every step but the last reads more than the budget less one block (the next did not fit)
    assert steps <= -(-total // (PREFILL_BUDGET - PREFILL_CHUNK)) < len(prompts) * 2  # (one block a step: 10)
    scheduler.run()
    for i, ids in enumerate(prompts):
        assert got[i] == [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids, max_tokens=8)]


def test_lowest_free_slot_keeps_the_batch_short(model):
    scheduler = model.scheduler(slots=4, kv_tokens=4 * 128)
    got: dict = {}
    for i, n in enumerate((2, 20, 20)):
        scheduler.add(model.request(model.encode_prompt(_prompt(5, i), raw=True), _collector(got, i), max_tokens=n))
    for _ in range(6):
        scheduler.step()
    assert set(scheduler.running) == {1, 2}  # request 0 left slot 0
    scheduler.add(model.request(model.encode_prompt("another", raw=True), _collector(got, 3), max_tokens=3))
    scheduler.step()
    assert set(scheduler.running) == {0, 1, 2}


def test_prompt_reuse_prefills_only_the_rest(model):
    """A request whose prompt starts with an idle slot's held tokens takes that slot and runs
    only its new tokens; the output is still the solo one."""
    system = _prompt(40, 11)
    first, second = system + " first question", system + " a second question here"
    scheduler = model.scheduler(slots=3, kv_tokens=3 * 256)
    calls: list = []
    _spy(scheduler.runner, calls)
    got: dict = {}
    scheduler.add(model.request(model.encode_prompt("unrelated words", raw=True), _collector(got, "other"),
                                max_tokens=40))
    scheduler.add(model.request(model.encode_prompt(first, raw=True), _collector(got, 0), max_tokens=4))
    scheduler.run()
    calls.clear()
    second_ids = model.encode_prompt(second, raw=True)
    shared = next(i for i, (a, b) in enumerate(zip(model.encode_prompt(first, raw=True), second_ids)) if a != b)
    scheduler.add(model.request(second_ids, _collector(got, 1), max_tokens=6))
    scheduler.run()
    assert [c[1:] for c in calls if c[0] == "prefill"] == [(1, len(second_ids) - shared)]  # slot 1, the rest only
    assert got[1] == _solo(model, second, dict(max_tokens=6))


def _copies(calls: list) -> list[tuple[int, int, int]]:
    """(source, slot, tokens) of every copy_prefix call `_spy` recorded."""
    return [call[1:] for call in calls if call[0] == "copy"]


def _prefilled(calls: list, slot: int) -> int:
    return sum(call[2] for call in calls if call[:2] == ("prefill", slot))


def test_a_burst_sharing_a_prefix_reads_it_once(model):
    """Three prompts with one system prompt arrive together: the first reads it, the others
    get its rows copied into their slots and read only what follows; outputs stay the solo ones."""
    from edge.generation.generate import common_prefix

    system = _prompt(40, 11)
    ids = [model.encode_prompt(f"{system} {_prompt(6, 30 + i)}", raw=True) for i in range(3)]
    scheduler = model.scheduler(slots=3, kv_tokens=3 * 256)
    calls, got = [], {}
    _spy(scheduler.runner, calls)
    sampling = dict(max_tokens=8, temperature=1.0, seed=6)  # draws that follow the context (greedy barely does here)
    for i, prompt in enumerate(ids):
        scheduler.add(model.request(prompt, _collector(got, i), **sampling))
    scheduler.run()
    assert _prefilled(calls, 0) == len(ids[0]) and _copies(calls)[0][1:] == (1, common_prefix(ids[0], ids[1]))
    for i in (1, 2):
        shared = max(common_prefix(ids[j], ids[i]) for j in range(i))
        assert shared >= len(model.encode_prompt(system, raw=True)) - 1  # the system prompt, at least
        assert _prefilled(calls, i) == len(ids[i]) - shared and (i, shared) in [c[1:] for c in _copies(calls)]
        assert got[i] == [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids[i], **sampling)]
    plain = model.scheduler(slots=3, kv_tokens=3 * 256)
    plain.copy_prefixes, calls[:] = False, []  # what benchmarks/prefix_copy.py compares with
    _spy(plain.runner, calls)
    for i, prompt in enumerate(ids):
        plain.add(model.request(prompt, _collector(got, i), **sampling))
    plain.run()
    assert not _copies(calls) and [_prefilled(calls, i) for i in range(3)] == [len(prompt) for prompt in ids]


def test_a_copy_takes_what_a_cancelled_source_still_holds(model, monkeypatch):
    """The request two followers were to copy a prefix from is cancelled mid-prompt: the first
    follower copies the rows it read before it left and reads the rest itself; the second
    then copies the longer prefix from the first. Outputs stay the solo ones."""
    budget = 2 * PREFILL_CHUNK
    monkeypatch.setattr("edge.generation.scheduler.PREFILL_BUDGET", budget)
    source = model.encode_prompt(_prompt(budget + 40, 7), raw=True)
    followers = [source[:-10] + source[1:9], source[:-10] + source[1:4] + source[20:24]]
    scheduler = model.scheduler(slots=3, kv_tokens=3 * 256)
    calls, got, cancel = [], {}, []
    _spy(scheduler.runner, calls)
    scheduler.add(model.request(source, _collector(got, "source"), max_tokens=4, cancelled=lambda: bool(cancel)))
    sampling = dict(max_tokens=8, temperature=1.0, seed=8)  # draws that follow the context (greedy barely does here)
    for i, ids in enumerate(followers):
        scheduler.add(model.request(ids, _collector(got, i), **sampling))
    scheduler.step()
    read = _prefilled(calls, 0)
    assert 0 < read < len(source) and not _copies(calls)  # the source is mid-prompt: no copy yet
    cancel.append(True)
    scheduler.run()
    shared = len(source) - 10 + 3  # the followers' common prefix
    assert _copies(calls) == [(0, 1, read), (1, 2, shared)]
    assert _prefilled(calls, 1) == len(followers[0]) - read and _prefilled(calls, 2) == len(followers[1]) - shared
    for i, ids in enumerate(followers):
        assert got[i] == [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids, **sampling)]
    assert not got["source"]


def test_a_request_beyond_its_slot_is_refused(model):
    scheduler = model.scheduler(slots=4, kv_tokens=4 * 64)
    with pytest.raises(ContextWindowError) as info:
        scheduler.add(model.request(model.encode_prompt(_prompt(30, 1), raw=True), print, max_tokens=60))
    assert info.value.param == "max_tokens" and "batch slot" in str(info.value)
    assert not scheduler.waiting


@pytest.mark.parametrize("slots, kv_tokens, param", [(0, 100, "slots"), (4, 3, "kv_tokens"), (2, 0, "kv_tokens")])
def test_bad_budgets(model, slots, kv_tokens, param):
    with pytest.raises(InputError) as info:
        model.scheduler(slots=slots, kv_tokens=kv_tokens)
    assert info.value.param == param


def test_bad_options_are_refused_at_once(model):
    scheduler = model.scheduler(slots=2, kv_tokens=256)
    with pytest.raises(InputError):
        scheduler.add(model.request([1, 2], print, max_tokens=4, stop=[""]))
    assert not scheduler.waiting
    with pytest.raises(InputError):
        model.generate_batch("one string")


REPEATING = "one two three four five one two three four five one two three four five one two"


def _spy_all(runner, calls: list):
    """As _spy, and the batch-1 calls with logits at every position: ("logits", slot, tokens)."""
    _spy(runner, calls)
    logits = runner.logits

    def spied_logits(slot, ids):
        calls.append(("logits", slot, len(ids)))
        return logits(slot, ids)

    runner.logits = spied_logits


def _plain(model, ids, options: dict) -> list:
    """The one-at-a-time path with one token per call: the oracle drafts must not change."""
    return [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids, draft="none", **options)]


@pytest.mark.parametrize("options, repeats", [
    (dict(max_tokens=40), True),  # greedy: the tiny model repeats a prompt token, the lookup drafts it
    (dict(max_tokens=40, temperature=0.7, seed=3), False),  # whatever is drafted, the draws are the same
    (dict(max_tokens=30, temperature=0.3, top_k=5, repetition_penalty=1.1, seed=4), False),
])
def test_a_request_alone_keeps_its_drafts(model, options, repeats):
    """Alone in the batch, a request checks prompt-lookup drafts at batch 1 (no batched
    decode call): the same chunks as plain one-token steps, and where the text repeats,
    fewer calls than tokens."""
    ids = model.encode_prompt(REPEATING, raw=True)
    scheduler = model.scheduler(slots=3, kv_tokens=3 * 256)
    calls, got, last = [], {}, []
    _spy_all(scheduler.runner, calls)
    collect = _collector(got, 0)
    scheduler.add(model.request(ids, lambda c: (collect(c), last.append(c.timings)), **options))
    scheduler.run()
    assert got[0] == _plain(model, ids, options)
    assert not [c for c in calls if c[0] == "decode"]
    if repeats:
        timings = last[-1]
        assert timings.accepted_tokens > 0 and timings.decode_calls < timings.completion_tokens - 1
        assert max(c[2] for c in calls if c[0] == "logits") > 1


def test_no_drafts_when_asked_for_none(model):
    ids = model.encode_prompt(REPEATING, raw=True)
    scheduler = model.scheduler(slots=2, kv_tokens=2 * 256)
    calls, got = [], {}
    _spy_all(scheduler.runner, calls)
    scheduler.add(model.request(ids, _collector(got, 0), max_tokens=20, draft="none"))
    scheduler.run()
    assert got[0] == _plain(model, ids, dict(max_tokens=20))
    assert {c[2] for c in calls if c[0] == "logits"} == {1}


def test_a_second_request_joining_mid_draft_stops_the_drafts(model):
    """A drafts alone; B joins: once B decodes, every call is a batched decode (no drafts)
    until B finishes, then A drafts again. Both outputs equal their plain solo runs."""
    a_ids = model.encode_prompt(REPEATING, raw=True)
    b_ids = model.encode_prompt(_prompt(PREFILL_CHUNK + 20, 8), raw=True)  # two prompt blocks
    scheduler = model.scheduler(slots=2, kv_tokens=2 * 256)
    calls, got = [], {}
    _spy_all(scheduler.runner, calls)
    a_options, b_options = dict(max_tokens=80), dict(max_tokens=12, temperature=0.9, seed=7)

    def finished_marker(key):
        collect = _collector(got, key)
        return lambda c: (collect(c), c.finish_reason and calls.append(("finished", key)))

    scheduler.add(model.request(a_ids, finished_marker("a"), **a_options))
    while not any(c[0] == "logits" and c[2] > 1 for c in calls):  # A is drafting
        scheduler.step()
    joined = len(calls)
    scheduler.add(model.request(b_ids, finished_marker("b"), **b_options))
    scheduler.run()
    assert got["a"] == _plain(model, a_ids, a_options)
    assert got["b"] == _plain(model, b_ids, b_options)
    after = calls[joined:]
    b_blocks = [i for i, c in enumerate(after) if c[0] == "prefill"]
    b_done = after.index(("finished", "b"))
    together = after[b_blocks[-1] + 1 : b_done]
    assert len(b_blocks) == 2 and together and all(c == ("decode", 2) for c in together)
    assert any(c[0] == "logits" and c[2] > 1 for c in after[b_done:])  # alone again: drafts again


def test_a_forced_run_longer_than_a_call_is_checked_in_pieces(model):
    """A choice forces ~100 tokens at once; a call at batch 1 takes at most PREFILL_CHUNK (64),
    so the drafts go in pieces (it raised ValueError and failed every job in the step)."""
    ids = model.encode_prompt("Pick one:", raw=True)
    options = dict(max_tokens=200, choices=[" ".join(["alpha beta gamma delta epsilon"] * 20)])
    scheduler = model.scheduler(slots=2, kv_tokens=2 * 256)
    got = {}
    scheduler.add(model.request(ids, _collector(got, 0), **options))
    scheduler.run()
    want = [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids, **options)]
    assert got[0] == want and len(want) > PREFILL_CHUNK


def test_ignore_eos_does_not_outlive_a_grammar(model):
    """With ignore_eos a constrained reply still ends at the grammar's end (its EOS): text
    after it would not parse."""
    ids = model.encode_prompt("Answer:", raw=True)
    for use_scheduler in (False, True):
        options = dict(max_tokens=30, choices=["yes", "no"], ignore_eos=True)
        if use_scheduler:
            scheduler, got = model.scheduler(slots=2, kv_tokens=2 * 256), {}
            scheduler.add(model.request(ids, _collector(got, 0), **options))
            scheduler.run()
            chunks = got[0]
        else:
            chunks = [(c.token, c.text, c.finish_reason) for c in model.stream_ids(ids, **options)]
        assert "".join(text for _, text, _ in chunks) in ("yes", "no") and chunks[-1][2] == "stop"


# --- drafts' recheck on quantized bundles, with a scripted runner -----------------------------


class _Letters:
    """A tokenizer stand-in: id i is one letter (TextStream only decodes)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(65 + i) for i in ids)

    def settled(self, ids, skip):
        return True


class RoundingRunner:
    """A BatchRunner stand-in over scripted slots: the row at generated position p forces
    scripts[slot][p]; a call of several tokens at a position in `ties` rounds token 11 ahead
    by 0.2 logits (as an 8-bit bundle's multi-token kernels may), a one-token call does not."""

    quantization = "int8"
    VOCAB = 12

    def __init__(self, scripts: dict, prompt: int, ties: set):
        self.slots, self.capacity, self.scripts, self.prompt, self.ties = len(scripts), 256, scripts, prompt, ties
        self.lengths, self.calls = [0] * self.slots, []

    @staticmethod
    def blocks(count):
        return [count]

    def length(self, slot):
        return self.lengths[slot]

    def rewind_to(self, n, slot):
        assert 0 <= n <= self.lengths[slot]
        self.lengths[slot] = n

    def _row(self, slot, several):
        step, row = self.lengths[slot] - self.prompt, np.zeros(self.VOCAB, np.float32)
        if 0 <= step < len(self.scripts[slot]):
            row[self.scripts[slot][step]] = 10.0
        if several and step in self.ties:
            row[11] = row.max() + 0.2
        return row

    def prefill(self, slot, ids):
        self.lengths[slot] += len(ids)
        return self._row(slot, False)

    def logits(self, slot, ids):
        self.calls.append(len(ids))
        rows = []
        for _ in ids:
            self.lengths[slot] += 1
            rows.append(self._row(slot, len(ids) > 1))
        return np.stack(rows)  # (len(ids), vocab)

    def decode(self, tokens):
        self.calls.append("batch")
        rows = []
        for slot, token in enumerate(tokens):
            self.lengths[slot] += token is not None
            rows.append(self._row(slot, False))
        return np.stack(rows)  # (m, vocab)


def _greedy_request(prompt, max_tokens, out):
    from edge.generation.sampler import SamplingParams, make_sampler
    from edge.generation.scheduler import Request

    return Request(list(prompt), make_sampler(SamplingParams()), max_tokens, lambda c: out.append(c.token))


@pytest.mark.parametrize("tie", [1, 9, 14])
def test_a_lone_slots_near_tie_is_decided_by_a_one_token_call(tie):
    """Greedy with drafts on an 8-bit bundle: the checked row's near-tie (0.2 < RECHECK_MARGIN)
    is redone by a one-token call, so the output is the script; the cache (the runner's
    lengths) must hold every id but the one fed next, or the script would shift."""
    from edge.generation.scheduler import Scheduler

    script, out = [1, 2, 3, 4] * 8, []
    runner = RoundingRunner({0: script}, 3, {tie})
    scheduler = Scheduler(runner, _Letters())
    scheduler.add(_greedy_request([1, 2, 3], 24, out))
    scheduler.run()
    assert out == script[:24] and max(runner.calls) > 1  # drafts were checked
    runner.quantization = "none"  # fp32: no recheck, the scripted rounding shows (the test can fail)
    out.clear()
    runner.lengths = [0]
    scheduler.add(_greedy_request([1, 2, 3], 24, out))
    scheduler.run()
    assert out != script[:24] and 11 in out


def test_a_slot_waiting_for_its_recheck_is_then_batched():
    from edge.generation.scheduler import Scheduler

    scripts, a, b = {0: [1, 2, 3, 4] * 8, 1: [5, 6, 7, 8] * 8}, [], []
    runner = RoundingRunner(scripts, 3, {10})
    scheduler = Scheduler(runner, _Letters())
    scheduler.add(_greedy_request([1, 2, 3], 28, a))
    while not any(r.recheck for r in scheduler.running.values()):
        assert scheduler.running or scheduler.waiting, "the near-tie was never seen"
        scheduler.step()
    scheduler.add(_greedy_request([5, 6, 7], 10, b))  # joins: the next steps are batched
    while "batch" not in runner.calls:
        assert scheduler.running, "the two requests never decoded together"
        scheduler.step()
    assert not scheduler.running[0].recheck  # the batched one-token row decided it: no redo left for later
    scheduler.run()
    assert a == scripts[0][:28] and b == scripts[1][:10]
    alone_again = runner.calls[len(runner.calls) - runner.calls[::-1].index("batch"):]
    assert alone_again and alone_again[0] > 1  # back alone, its first call checks drafts again
