"""Continuous batching: many generations share one decoder call per step.

In: `Request`s (prompt ids, a sampler, stop rules, a sink for chunks). Out: each request's
`StreamChunk`s, pushed to its sink as its tokens are sampled. The scheduler owns a
`BatchRunner`'s slots; each `step()`:

1. frees the slots of cancelled requests (finished ones left at the end of the last step);
2. gives free slots to waiting requests, lowest slot first (so the decode batch, slots
   0..m-1, stays short), or to the idle slot whose held tokens start the prompt (prompt
   reuse, as llama.cpp's server does: a shared system prompt, the last chat turn); a prompt
   that starts like a running request's for longer gets the rows of that prefix copied into
   its slot, from whichever slot holds the most of it when its own first block is due, so a
   burst of requests with one system prompt reads it once (copying 40 tokens of SmolLM2's
   cache takes under a millisecond, reading them ~0.1 s: benchmarks/prefix_copy.py);
3. reads prompt blocks (at most PREFILL_CHUNK tokens each, at batch 1), oldest admitted
   first, up to PREFILL_BUDGET tokens a step: a burst of new requests gets its first tokens
   within a few steps, running streams wait for one budget at most between two tokens, and
   a long prompt is read over several steps;
4. runs one decode call for every slot that has a token to feed, samples each row with its
   request's own sampler, and pushes the token through the request's own `TextStream`.
   A request decoding alone (the others free or reading their prompts) runs at batch 1
   instead, where onnxruntime allows several new tokens with a past, so it keeps its
   speculative drafts (drafts.py: the same output, fewer calls; on 8-bit bundles up to near-ties); as soon as a second one
   decodes, the batched steps go on without drafts.

Every request keeps its own sampler (and seed), stop strings, max tokens, detokenizer and
timings, and its logits are those of its own sequence (seqlens_k per slot), so its output
is the one it gets alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edge.engine.decoder_runner import PREFILL_CHUNK
from edge.errors import ContextWindowError
from edge.generation.budget import DEFAULT_KV_TOKENS, DEFAULT_SLOTS
from edge.generation.generate import (Clock, DraftStats, StreamChunk, TextStream, check_fits, common_prefix,
                                      prefill_start)
from edge.generation.drafts import Drafts, call_costs, recheck_margin
from edge.generation.sampler import Sampler
from edge.generation.stop import StopStrings

if TYPE_CHECKING:
    from edge.generation.constraints import Matcher
    from edge.engine.batch_runner import BatchRunner
    from edge.tokenizer import Tokenizer

# Prompt tokens read per step at most (beyond one block). A prompt block costs several decode
# steps, so reading a burst of new prompts in few steps gives them their first tokens sooner
# and spikes the time between tokens of running streams in few steps (p95 stays low); the
# budget bounds each spike. Measured in benchmarks/README.md (serve_load.py).
PREFILL_BUDGET = 4 * PREFILL_CHUNK
MIN_REUSE = 16  # a held prefix shorter than this is not worth a slot beyond the lowest free one


@dataclass
class Request:
    ids: list[int]  # the prompt
    sampler: Sampler
    max_tokens: int
    sink: Callable[[StreamChunk], None]  # each chunk, on the scheduler's thread; the last has a finish reason
    eos_ids: Collection[int] = ()
    stop: Sequence[str] = ()
    cancelled: Callable[[], bool] = lambda: False  # polled every step: True frees the slot
    matcher: Matcher | None = None  # structured output: each row masked to the grammar
    draft: str = "lookup"  # drafts while decoding alone: "lookup" (prompt lookup) or "none"


@dataclass
class _Running:
    """A request in its slot: its ids so far, the prompt blocks still to run, its text."""

    request: Request
    slot: int
    text: TextStream
    stats: DraftStats
    blocks: deque[list[int]]  # prompt blocks not run yet
    drafts: Drafts  # what to check while it decodes alone
    ids: list[int] = field(default_factory=list)  # prompt + sampled (what the repetition penalty sees)
    next_token: int | None = None  # sampled, not yet fed
    margin: float = 0.0  # drafts.recheck_margin: a checked row's greedy near-tie is redone alone
    recheck: bool = False  # the next call is one token (the last checked row was a near-tie)
    clock: Clock | None = None  # the request's timings (its prefill count follows a copy)
    copy: bool = False  # a running request's prompt starts like this one: copy rows before the first block


class Scheduler:
    def __init__(self, runner: BatchRunner, tokenizer: Tokenizer, load_s: float = 0.0):
        self.runner, self.tokenizer, self.load_s = runner, tokenizer, load_s
        self.waiting: deque[Request] = deque()
        self.running: dict[int, _Running] = {}  # slot -> its request
        self._held: list[list[int]] = [[] for _ in range(runner.slots)]  # ids each idle slot's cache holds
        self.copy_prefixes = True  # False: no rows copied between slots (benchmarks/prefix_copy.py compares)
        self.steps = 0

    @property
    def busy(self) -> int:
        return len(self.running)

    @property
    def free(self) -> int:
        return self.runner.slots - len(self.running)

    def add(self, request: Request) -> None:
        """Queue `request`; a prompt plus max_tokens beyond one slot is refused here."""
        try:
            check_fits(len(request.ids), request.max_tokens, self.runner.capacity)
        except ContextWindowError as exc:
            raise ContextWindowError(exc.message.replace("the context window", "a batch slot (the KV budget "
                                     "divided by the slot count)"), param=exc.param) from None
        StopStrings(request.stop)  # bad stop strings are refused now, not mid-batch
        self.waiting.append(request)

    def run(self) -> None:
        """Step until every request has finished or been cancelled."""
        while self.waiting or self.running:
            self.step()

    def step(self) -> None:
        for running in [r for r in self.running.values() if r.request.cancelled()]:
            self._leave(running)
        while self.waiting and self.free:
            request = self.waiting.popleft()
            if not request.cancelled():
                self._admit(request)
        self._prefill()
        self._decode()
        self.steps += 1

    def _admit(self, request: Request) -> None:
        slot, held = self._place(request.ids)
        shared = self._shared(request.ids)
        start = prefill_start(len(request.ids), held)
        self.runner.rewind_to(start, slot)
        stats = DraftStats()
        clock = Clock(len(request.ids), len(request.ids) - start, self.load_s, stats)
        text = TextStream(self.tokenizer, request.max_tokens, request.eos_ids, request.stop, clock, request.matcher)
        drafts = Drafts(request.ids, call_costs(self.runner.quantization), lookup=request.draft == "lookup")
        running = _Running(request, slot, text, stats, deque(), drafts, list(request.ids),
                           margin=recheck_margin(request.sampler, self.runner.quantization), clock=clock)
        if prefill_start(len(request.ids), shared) > start:
            running.copy = True  # blocks once the copy is made
        else:
            running.blocks = self._blocks(request.ids, start)
        self.running[slot] = running

    def _blocks(self, ids: list[int], start: int) -> deque[list[int]]:
        """ids[start:] in the blocks a solo prefill of them runs."""
        rest = ids[start:]
        return deque(rest[a:b] for a, b in _spans(self.runner.blocks(len(rest))))

    def _shared(self, ids: list[int]) -> int:
        """The longest prefix of `ids` that a running request's prompt starts with, if at
        least MIN_REUSE long (else 0). Its rows are all in that slot by the time a newer
        request's first block runs: prompts are read oldest first."""
        shared = max((common_prefix(r.request.ids, ids) for r in self.running.values()), default=0)
        return shared if shared >= MIN_REUSE and self.copy_prefixes else 0

    def _take_copy(self, running: _Running) -> None:
        """Copy in the rows of the longest prefix another slot holds now (the request it was
        planned from may have left, been cancelled mid-prompt or lost its slot since; another
        that copied it may hold it), else prefill from the slot's own rows (its held reuse,
        untouched since admission); then the blocks of the rest."""
        ids, own, running.copy = running.request.ids, self.runner.length(running.slot), False
        source, rows = self._holder(ids, running.slot)
        start = prefill_start(len(ids), rows)
        if start > own:
            self.runner.copy_prefix(source, running.slot, start)
            running.clock.prefilled = len(ids) - start
        running.blocks = self._blocks(ids, max(start, own))

    def _holder(self, ids: list[int], slot: int) -> tuple[int, int]:
        """(other slot, n): the slot other than `slot` whose cache holds the longest prefix of
        `ids` now, running or idle, and its length; (-1, 0) when none holds any."""
        best, rows = -1, 0
        for other in range(self.runner.slots):
            running = self.running.get(other)
            held = running.ids if running is not None else self._held[other]  # rows 0..length-1 hold these
            n = common_prefix(held[: self.runner.length(other)], ids) if other != slot else 0
            if n > rows:
                best, rows = other, n
        return best, rows

    def _place(self, ids: list[int]) -> tuple[int, int]:
        """(slot, how many of its held ids start `ids`): the free slot holding the longest
        prefix of at least MIN_REUSE, else the lowest free slot."""
        free = [s for s in range(self.runner.slots) if s not in self.running]
        shared = {s: common_prefix(self._held[s], ids) for s in free}
        best = max(free, key=lambda s: (shared[s], -s))
        return (best, shared[best]) if shared[best] >= MIN_REUSE else (free[0], 0)

    def _prefill(self) -> None:
        """Prompt blocks, oldest admitted prompt first, up to PREFILL_BUDGET tokens (at least
        one block); a prompt whose last block ran samples its first token."""
        spent = 0
        for running in list(self.running.values()):  # dicts keep admission order
            if running.copy:
                self._take_copy(running)
            while running.blocks and (not spent or spent + len(running.blocks[0]) <= PREFILL_BUDGET):
                block = running.blocks.popleft()
                spent += len(block)
                logits = self.runner.prefill(running.slot, block)  # (vocab,)
                if not running.blocks:
                    self._sample(running, logits)
            if running.blocks:
                return

    def _decode(self) -> None:
        ready = {slot: r.next_token for slot, r in self.running.items() if r.next_token is not None}
        if not ready:
            return
        if len(ready) == 1:
            self._decode_alone(self.running[next(iter(ready))])
            return
        tokens = [ready.get(slot) for slot in range(max(ready) + 1)]
        rows = self.runner.decode(tokens)  # (m, vocab)
        for slot in ready:
            running = self.running[slot]
            running.stats.calls += 1
            running.recheck = False  # a one-token row: it decides a near-tie left by a call alone
            self._sample(running, rows[slot])

    def _decode_alone(self, running: _Running) -> None:
        """One call at batch 1 on the slot: the last token and its drafts, checked as
        generate_tokens checks them (sample, then compare); unkept drafts are rewound."""
        request, ids, slot = running.request, running.ids, running.slot
        room = min(request.max_tokens - (len(ids) - len(request.ids)) - 1, self.runner.capacity - len(ids),
                   PREFILL_CHUNK - 1)  # a batch-1 call takes at most PREFILL_CHUNK tokens; forced runs can be longer
        redo, running.recheck = running.recheck, False  # redo: this one-token call decides a near-tie
        drafted = [] if redo else running.drafts.next(ids, room, request.matcher)
        running.stats.drafted += len(drafted)
        rows = self.runner.logits(slot, [running.next_token, *drafted])  # (1 + drafted, vocab)
        running.stats.calls += 1
        for i, row in enumerate(rows):  # row i: the position after drafted[:i]
            row = self._masked(running, row)
            token, running.recheck = running.drafts.pick(request.sampler, row, ids, i, len(rows) > 1,
                                                         running.margin, redo)
            if running.recheck:  # a near-tie in a checked row: a one-token call decides it
                break
            if i:
                running.stats.accepted += 1  # row i stands on drafted[i - 1]: that draft saved a call
            self._sample(running, row, masked=True, token=token)
            if running.text.finished:  # it left its slot (rewound there)
                return
            if i == len(drafted) or ids[-1] != drafted[i]:
                break
        self.runner.rewind_to(len(ids) - 1, slot)  # the cache holds every id but the one to feed next

    @staticmethod
    def _masked(running: _Running, logits: np.ndarray) -> np.ndarray:
        """The logits the request's grammar allows (-inf elsewhere), or them as they are."""
        matcher = running.request.matcher
        return logits if matcher is None else matcher.mask(logits)

    def _sample(self, running: _Running, logits: np.ndarray, masked: bool = False, token: int | None = None) -> None:
        """Draw from `logits` (already masked to the grammar if `masked`), or take `token`
        drawn from them already, and push it to the request."""
        matcher = running.request.matcher
        if token is None:
            token = running.request.sampler(logits if masked else self._masked(running, logits), running.ids)
        if matcher is not None:
            matcher.consume(token)
        running.ids.append(token)
        chunk = running.text.push(token)
        running.next_token = None if running.text.finished else token
        running.request.sink(chunk)
        if running.text.finished:
            self._leave(running)

    def _leave(self, running: _Running) -> None:
        """Free the slot; its cache keeps what it holds (no unkept drafts) for a later prompt
        that starts with it."""
        del self.running[running.slot]
        held = min(self.runner.length(running.slot), len(running.ids) - 1)
        self.runner.rewind_to(held, running.slot)
        self._held[running.slot] = running.ids[:held]


def _spans(sizes: list[int]) -> list[tuple[int, int]]:
    """Example: [3, 2] -> [(0, 3), (3, 5)]"""
    ends = np.cumsum(sizes).tolist()
    return list(zip([0, *ends[:-1]], ends))
