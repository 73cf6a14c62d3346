"""Generation in three layers, as in mlx-lm: token ids -> text chunks -> one string.

`generate_tokens` drives the decoder (prefill, then one `decode_step` per token) and the
sampler; it knows nothing about text. `stream` turns ids into UTF-8-safe text chunks and
applies the stop rules (EOS ids, stop strings, max tokens), with timings on the last
chunk. `generate` joins the chunks. Per token the Python work is one sampler call, one
streaming-decoder push and a scan of the short held-back text for stop strings.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.errors import ContextWindowError, InputError, check_positive_int
from edge.generation.sampler import Sampler
from edge.tokenizer.stream import StreamDetokenizer

if TYPE_CHECKING:
    from edge.engine.decoder_runner import DecoderRunner
    from edge.tokenizer import Tokenizer


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int  # the whole prompt, including a reused cache prefix
    completion_tokens: int  # sampled tokens, including a final EOS
    load_s: float  # passed in: opening the bundle
    ttft_s: float  # time to first token: prefill + first sample
    prefill_tok_s: float  # prompt tokens actually run (not reused) per second
    decode_tok_s: float  # tokens after the first per second (0.0 with only one token)


@dataclass(frozen=True)
class StreamChunk:
    """One sampled token and the text it released; the last chunk says why generation ended."""

    text: str  # new text; may be "" while it could still start a stop string
    token: int
    finish_reason: str | None = None  # None, "stop" (EOS or stop string) or "length"
    timings: Timings | None = None  # on the last chunk only


def generate_tokens(decoder: DecoderRunner, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
                    reuse: int = 0) -> Iterator[int]:
    """Yield up to `max_tokens` sampled ids; close the generator to stop early.

    `reuse`: how many leading prompt ids the decoder's cache already holds (a chat turn);
    only the rest is prefilled. 0 starts from an empty cache.
    """
    check_fits(len(prompt_ids), max_tokens, decoder.context_length)
    start = prefill_start(len(prompt_ids), reuse)
    decoder.rewind_to(start)
    decoder.reserve(len(prompt_ids) + max_tokens)
    logits = decoder.prefill(prompt_ids[start:])  # (vocab,)
    ids = list(prompt_ids)  # what the repetition penalty looks back on
    for step in range(max_tokens):
        token = sampler(logits, ids)
        yield token
        ids.append(token)
        if step + 1 < max_tokens:
            logits = decoder.decode_step(token)


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
           eos_ids: Collection[int] = (), stop: Sequence[str] = (), reuse: int = 0,
           load_s: float = 0.0) -> Iterator[StreamChunk]:
    """Text chunks, one per sampled token; EOS and stop strings end it and are not emitted."""
    eos, stops, text = frozenset(eos_ids), StopStrings(stop), StreamDetokenizer(tokenizer)
    clock = _Clock(len(prompt_ids), len(prompt_ids) - prefill_start(len(prompt_ids), reuse), load_s)
    tokens = generate_tokens(decoder, prompt_ids, sampler, max_tokens, reuse)
    for count, token in enumerate(tokens, start=1):
        clock.tick()
        if token in eos:
            yield StreamChunk(stops.flush(text.flush()), token, "stop", clock.timings(count))
            return
        released, hit = stops.push(text.push(token))
        if hit:
            yield StreamChunk(released, token, "stop", clock.timings(count))
            return
        if count == max_tokens:
            yield StreamChunk(released + stops.flush(text.flush()), token, "length", clock.timings(count))
            return
        yield StreamChunk(released, token)


def generate(decoder: DecoderRunner, tokenizer: Tokenizer, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
             **kw) -> str:
    """The whole completion: exactly the concatenation of what `stream` yields."""
    return "".join(chunk.text for chunk in stream(decoder, tokenizer, prompt_ids, sampler, max_tokens, **kw))


class StopStrings:
    """Holds back text that could begin a stop string; releases the rest.

    Example: stop ["</s>"]; push("ab<") -> ("ab", False); push("/s>x") -> ("", True)
    """

    def __init__(self, stops: Sequence[str]):
        if any(not isinstance(s, str) or not s for s in stops):
            raise InputError(f"stop strings must be non-empty strings, got {list(stops)!r}.")
        self._stops = tuple(stops)
        self._held = ""  # never longer than the longest stop string

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string appeared); after a hit, emit and end."""
        pending = self._held + text
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return pending[: min(hits)], True
        keep = self._longest_partial(pending)
        self._held = pending[len(pending) - keep:]
        return pending[: len(pending) - keep], False

    def flush(self, text: str = "") -> str:
        """The held-back text at the end of generation (cut at a stop string if one completes)."""
        released, hit = self.push(text)
        held, self._held = ("" if hit else self._held), ""
        return released + held

    def _longest_partial(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best


class _Clock:
    """Wall-clock marks for the final chunk's timings."""

    def __init__(self, prompt_tokens: int, prefilled: int, load_s: float):
        self.prompt_tokens, self.prefilled, self.load_s = prompt_tokens, prefilled, load_s
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
        )
