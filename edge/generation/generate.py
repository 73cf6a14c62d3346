"""Generation in three layers, as in mlx-lm: token ids -> text chunks -> one string.

`generate_tokens` drives the decoder and the sampler; it knows nothing about text. Each
decoder call feeds the last sampled token plus the tokens drafted after it (none where no
draft pays; see drafts.py) and returns logits for every one of those positions; the
sampler then draws position by position and keeps drafted tokens while they equal its
draws ("sample, then compare"), so the output is exactly what one-token steps would give:
the same argmax when greedy, the same random draws from the same seeded generator when
sampling. The cache is rewound past the drafts that were not kept. On a quantized bundle a
greedy near-tie in a checked row is decided by a one-token step instead (drafts.recheck_margin):
the k-token kernels round differently and could flip it.

`stream` turns ids into UTF-8-safe text chunks, one per token, and applies the stop rules
(EOS ids, stop strings, max tokens), with timings on the last chunk. `generate` joins the
chunks. Per token the Python work is one sampler call, a few dictionary updates of the
drafter, one streaming-detokenizer push and a scan of the short held-back text for stops.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.errors import ContextWindowError, InputError, check_positive_int
from edge.generation.drafts import Drafts, call_costs, recheck_margin
from edge.generation.sampler import Sampler
from edge.generation.stop import StopStrings
from edge.tokenizer.stream import StreamDetokenizer

if TYPE_CHECKING:
    from edge.engine.decoder_runner import DecoderRunner
    from edge.generation.constraints import Matcher
    from edge.tokenizer import Tokenizer

DRAFTS = ("lookup", "none")  # prompt-lookup drafts (the default), or one token per call


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int  # the whole prompt, including a reused cache prefix
    completion_tokens: int  # sampled tokens, including a final EOS
    load_s: float  # passed in: opening the bundle
    ttft_s: float  # time to first token: prefill + first sample
    prefill_tok_s: float  # prompt tokens actually run (not reused) per second
    decode_tok_s: float  # tokens after the first per second (0.0 with only one token)
    drafted_tokens: int = 0  # drafted tokens checked by the decoder
    accepted_tokens: int = 0  # of those, kept (each saved a decoder call)
    decode_calls: int = 0  # decoder calls after the prompt


@dataclass(frozen=True)
class StreamChunk:
    """One sampled token and the text it released; the last chunk says why generation ended."""

    text: str  # new text; may be "" while it could still start a stop string
    token: int
    finish_reason: str | None = None  # None, "stop" (EOS or stop string) or "length"
    timings: Timings | None = None  # on the last chunk only
    complete: bool | None = None  # last chunk of a constrained reply: whether it fits the grammar whole


@dataclass
class DraftStats:
    drafted: int = 0
    accepted: int = 0
    calls: int = 0


def check_draft(draft: str) -> str:
    if draft not in DRAFTS:
        raise InputError(f"{{param}} must be one of {', '.join(DRAFTS)}, got {draft!r}.", param="draft")
    return draft


def generate_tokens(decoder: DecoderRunner, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
                    reuse: int = 0, draft: str = "lookup", stats: DraftStats | None = None,
                    matcher: Matcher | None = None) -> Iterator[int]:
    """Yield up to `max_tokens` sampled ids; close the generator to stop early.

    `reuse`: how many leading prompt ids the decoder's cache already holds (a chat turn);
    only the rest is prefilled. 0 starts from an empty cache. Whenever the caller stops,
    the cache holds every yielded id but the last (as after one-token steps), so a chat
    turn can reuse it; rejected drafts are never left in it. `matcher`: a grammar the ids
    must follow (constraints.py): each position's logits are masked to it, and the tokens
    it forces are checked as drafts.
    """
    check_fits(len(prompt_ids), max_tokens, decoder.context_length)
    check_draft(draft)
    stats = stats if stats is not None else DraftStats()
    start = prefill_start(len(prompt_ids), reuse)
    decoder.rewind_to(start)
    decoder.reserve(len(prompt_ids) + max_tokens)
    rows = decoder.prefill(prompt_ids[start:])[None]  # (1, vocab): the next position
    ids = list(prompt_ids)  # what the repetition penalty looks back on
    drafts, drafted = Drafts(ids, call_costs(decoder.quantization), lookup=draft == "lookup"), []
    margin = recheck_margin(sampler, decoder.quantization)
    recheck = False
    try:
        while True:
            redo, recheck = recheck, False  # redo: this one-token call decides the last call's near-tie
            for i, row in enumerate(rows):  # row i: the position after drafted[:i]
                row = row if matcher is None else matcher.mask(row)
                token, recheck = drafts.pick(sampler, row, ids, i, len(rows) > 1, margin, redo)
                if recheck:  # a near-tie in a checked row: a one-token step decides it
                    break
                token = sampler(row, ids) if token is None else token
                if i:
                    stats.accepted += 1  # row i stands on drafted[i - 1]: that draft saved a call
                if matcher is not None:
                    matcher.consume(token)
                ids.append(token)
                yield token
                if len(ids) - len(prompt_ids) == max_tokens:
                    return
                if i == len(drafted) or token != drafted[i]:
                    break
            room = min(max_tokens - (len(ids) - len(prompt_ids)) - 1, decoder.context_length - len(ids))
            drafted = [] if recheck else drafts.next(ids, room, matcher)
            stats.drafted += len(drafted)
            decoder.rewind_to(len(ids) - 1)  # keep the last token's predecessors: drop unkept drafts
            if drafted:
                rows = decoder.logits([ids[-1], *drafted])  # (1 + drafted, vocab)
            else:
                rows = decoder.decode_step(ids[-1])[None]  # (1, vocab)
            stats.calls += 1
    finally:
        decoder.rewind_to(min(decoder.cache_length, len(ids) - 1))


def prefill_start(prompt_length: int, reuse: int) -> int:
    """The first prompt position to run: at least the last one, whose logits we need."""
    return max(0, min(reuse, prompt_length - 1))


def check_fits(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    if prompt_tokens == 0:
        raise InputError("the prompt is empty: give some text to continue.", param="prompt")
    check_positive_int(max_tokens, "max_tokens")
    if prompt_tokens + max_tokens > context_length:
        room = context_length - prompt_tokens
        fix = f"use {{param}} {room} or less, or a shorter prompt" if room > 0 else "use a shorter prompt"
        raise ContextWindowError(
            f"the prompt ({prompt_tokens} tokens) plus {{param}} {max_tokens} exceeds the context window of "
            f"{context_length} tokens: {fix}.", param="max_tokens"
        )


def stream(decoder: DecoderRunner, tokenizer: Tokenizer, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int, *,
           eos_ids: Collection[int] = (), stop: Sequence[str] = (), reuse: int = 0, draft: str = "lookup",
           matcher: Matcher | None = None, load_s: float = 0.0) -> Iterator[StreamChunk]:
    """Text chunks, one per sampled token; EOS and stop strings end it and are not emitted.
    With a `matcher`, the last chunk says whether the reply fits the grammar whole."""
    stats = DraftStats()
    clock = Clock(len(prompt_ids), len(prompt_ids) - prefill_start(len(prompt_ids), reuse), load_s, stats)
    text = TextStream(tokenizer, max_tokens, eos_ids, stop, clock, matcher)
    for token in generate_tokens(decoder, prompt_ids, sampler, max_tokens, reuse, draft, stats, matcher):
        yield text.push(token)
        if text.finished:
            return


class TextStream:
    """One generation's sampled ids in, its text chunks out: the stop rules (EOS, stop
    strings, max tokens), UTF-8-safe detokenization, and the timings on the last chunk.
    `stream` and the batching scheduler both push their tokens through one of these."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, eos_ids: Collection[int], stop: Sequence[str],
                 clock: Clock, matcher: Matcher | None = None):
        self._eos, self._stops, self._text = frozenset(eos_ids), StopStrings(stop), StreamDetokenizer(tokenizer)
        self._max_tokens, self._clock, self._count = max_tokens, clock, 0
        self._matcher = matcher  # a constraint: the last chunk says whether the text fits it whole
        self.finished = False

    def push(self, token: int) -> StreamChunk:
        """The chunk `token` releases; after a chunk with a finish reason, `finished` is set."""
        self._clock.tick()
        self._count += 1
        count, stops, text = self._count, self._stops, self._text
        if token in self._eos:
            return self._last(StreamChunk(stops.flush(text.flush()), token, "stop", self._clock.timings(count)))
        released, hit = stops.push(text.push(token))
        if hit:
            return self._last(StreamChunk(released, token, "stop", self._clock.timings(count)))
        if count == self._max_tokens:
            chunk = StreamChunk(released + stops.flush(text.flush()), token, "length", self._clock.timings(count))
            return self._last(chunk)
        return StreamChunk(released, token)

    def _last(self, chunk: StreamChunk) -> StreamChunk:
        self.finished = True
        if self._matcher is None:
            return chunk
        return StreamChunk(chunk.text, chunk.token, chunk.finish_reason, chunk.timings, self._matcher.accepting)


def generate(decoder: DecoderRunner, tokenizer: Tokenizer, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
             **kw) -> str:
    """The whole completion: exactly the concatenation of what `stream` yields."""
    return "".join(chunk.text for chunk in stream(decoder, tokenizer, prompt_ids, sampler, max_tokens, **kw))


class Clock:
    """Wall-clock marks for the final chunk's timings, from its creation (the request's start)."""

    def __init__(self, prompt_tokens: int, prefilled: int, load_s: float, drafts: DraftStats):
        self.prompt_tokens, self.prefilled, self.load_s, self.drafts = prompt_tokens, prefilled, load_s, drafts
        self.start = time.perf_counter()
        self.first = self.last = None

    def tick(self) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last

    def timings(self, completion_tokens: int) -> Timings:
        ttft = self.first - self.start
        decode = self.last - self.first
        return Timings(
            prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens, load_s=self.load_s, ttft_s=ttft,
            prefill_tok_s=self.prefilled / ttft if ttft > 0 else 0.0,
            decode_tok_s=(completion_tokens - 1) / decode if decode > 0 else 0.0,
            drafted_tokens=self.drafts.drafted, accepted_tokens=self.drafts.accepted, decode_calls=self.drafts.calls,
        )


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Example: [1, 2, 3, 4], [1, 2, 5] -> 2"""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
