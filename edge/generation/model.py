"""A loaded text-generation bundle: prompts, conversations and texts in; text and scores out.

`edge.load(path)` returns a `LanguageModel` holding the manifest, the tokenizer and the
decoder. Its methods take the same keyword names as the CLI flags (max_tokens,
temperature, top_k, top_p, min_p, repetition_penalty, seed, stop, raw), so the CLI is a
thin layer over it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from edge.generation import generate
from edge.bundle import Bundle
from edge.generation.chat import ChatSession
from edge.generation.chat_template import Message, render
from edge.engine.batch_runner import BatchRunner
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import InputError, check_positive_int, check_prompt
from edge.generation.generate import StreamChunk, check_draft
from edge.manifest import Manifest
from edge.generation.sampler import Sampler, SamplingParams, make_sampler
from edge.generation.scheduler import DEFAULT_KV_TOKENS, DEFAULT_SLOTS, Request, Scheduler
from edge.tokenizer import Tokenizer, load_tokenizer

DEFAULT_MAX_TOKENS = 256
PERPLEXITY_WINDOW = 512  # next-token predictions per window (export.quality.WINDOW)


class LanguageModel:
    """A loaded generation bundle. Thread-safe for generation: every `generate`, `stream`,
    `chat` call and every chat session runs on a KV cache of its own over the one shared
    onnxruntime session, so streams may be interleaved and threads may call it at once (each
    gets exactly the output it would get alone; they share the CPU). A `ChatSession` itself
    is one conversation: use it from one thread at a time."""

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, decoder: DecoderRunner, load_s: float = 0.0):
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.load_s = load_s  # reported in the timings of every generation

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None, started: float | None = None) -> LanguageModel:
        """`started`: when loading began (perf_counter), if before this call (bundle checks)."""
        started = time.perf_counter() if started is None else started
        tokenizer = load_tokenizer(bundle.file(bundle.manifest.tokenizer.file))
        decoder = DecoderRunner.open(bundle, threads)
        return cls(bundle.manifest, tokenizer, decoder, time.perf_counter() - started)

    # --- prompts -> ids --------------------------------------------------------------------

    def encode_prompt(self, prompt: str, raw: bool = False) -> list[int]:
        """The prompt as one user message through the chat template, or as plain text when
        `raw` or when the bundle has no template."""
        check_prompt(prompt)
        if raw or not self.manifest.tokenizer.chat_template:
            return self.encode_text(prompt)
        return self.encode_chat([{"role": "user", "content": prompt}])

    def encode_text(self, text: str) -> list[int]:
        """Plain text, with BOS first when the model expects it (Llama-1/TinyLlama style)."""
        return self.manifest.tokenizer.bos_prefix() + self.tokenizer.encode(text)

    def encode_chat(self, messages: list[Message]) -> list[int]:
        """The template writes every special token itself, as transformers' apply_chat_template."""
        return self.tokenizer.encode(render(messages, self.manifest.tokenizer))

    # --- generation ------------------------------------------------------------------------

    def generate(self, prompt: str, *, raw: bool = False, **options) -> str:
        return "".join(chunk.text for chunk in self.stream(prompt, raw=raw, **options))

    def stream(self, prompt: str, *, raw: bool = False, **options) -> Iterator[StreamChunk]:
        return self.stream_ids(self.encode_prompt(prompt, raw), **options)

    def chat(self, messages: list[Message], **options) -> str:
        return "".join(chunk.text for chunk in self.stream_chat(messages, **options))

    def stream_chat(self, messages: list[Message], **options) -> Iterator[StreamChunk]:
        return self.stream_ids(self.encode_chat(messages), **options)

    def chat_session(self, system: str | None = None, **options) -> ChatSession:
        return ChatSession(self, system, **options)

    def stream_ids(self, ids: Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS, draft: str = "lookup",
                   decoder: DecoderRunner | None = None, reuse: int = 0, **sampling) -> Iterator[StreamChunk]:
        """Token ids in, chunks out. `draft`: "lookup" checks tokens guessed from the text
        itself several per decoder call (same output, faster where text repeats), "none" one
        token per call. A chat session passes its own `decoder` and how many leading ids its
        cache already holds (`reuse`). `sampling`: temperature, top_k, top_p, min_p,
        repetition_penalty, seed, stop."""
        sampler, stops = _sampling(**sampling)
        # Each generation runs on a cache of its own (a fork shares the session and weights),
        # so interleaved streams and threads never see each other's tokens.
        return generate.stream(decoder or self.decoder.fork(), self.tokenizer, list(ids), sampler, max_tokens,
                               eos_ids=self.manifest.tokenizer.eos_token_ids, stop=stops, reuse=reuse,
                               draft=check_draft(draft), load_s=self.load_s)

    # --- many generations at once (continuous batching) ----------------------------------

    def scheduler(self, slots: int = DEFAULT_SLOTS, kv_tokens: int = DEFAULT_KV_TOKENS) -> Scheduler:
        """A scheduler of `slots` sequences decoded together, sharing a KV budget of
        `kv_tokens` (each slot holds at most kv_tokens // slots, and the context length)."""
        check_positive_int(slots, "slots")
        check_positive_int(kv_tokens, "kv_tokens")
        if kv_tokens < slots:
            raise InputError(f"{{param}} {kv_tokens} leaves no room for {slots} slots: give at least one token "
                             "per slot.", param="kv_tokens")
        runner = BatchRunner(self.decoder, slots, min(kv_tokens // slots, self.decoder.context_length))
        return Scheduler(runner, self.tokenizer, self.load_s)

    def request(self, ids: Sequence[int], sink: Callable[[StreamChunk], None], *,
                max_tokens: int = DEFAULT_MAX_TOKENS, draft: str = "none",
                cancelled: Callable[[], bool] = lambda: False, **sampling) -> Request:
        """One generation for a `scheduler()`, with the options of `stream_ids`; its chunks go
        to `sink`. Batched steps check no drafts, so `draft` is accepted and not used."""
        check_draft(draft)
        sampler, stops = _sampling(**sampling)
        return Request(list(ids), sampler, max_tokens, sink, self.manifest.tokenizer.eos_token_ids, stops, cancelled)

    def generate_batch(self, prompts: Sequence[str], *, raw: bool = False, slots: int = DEFAULT_SLOTS,
                       kv_tokens: int = DEFAULT_KV_TOKENS, **options) -> list[str]:
        """The completions of `prompts`, in order, generated `slots` at a time: each is the
        text `generate(prompt, **options)` gives (exactly so on fp32 bundles)."""
        if isinstance(prompts, str):
            raise InputError("generate_batch takes a list of prompts; use generate for one.", param="prompts")
        scheduler = self.scheduler(slots, kv_tokens)
        texts: list[list[str]] = [[] for _ in prompts]
        for pieces, prompt in zip(texts, prompts):
            scheduler.add(self.request(self.encode_prompt(prompt, raw), lambda c, p=pieces: p.append(c.text), **options))
        scheduler.run()
        return ["".join(pieces) for pieces in texts]

    # --- scoring ---------------------------------------------------------------------------

    def perplexity(self, text: str) -> float:
        """exp(mean next-token NLL), teacher-forced from a fresh cache in windows of at most
        PERPLEXITY_WINDOW predictions; consecutive windows share one token, so every token
        after the first is predicted once. The exporter's quality report counts the same way."""
        if not isinstance(text, str):
            raise InputError(f"perplexity needs a string, got {type(text).__name__}.")
        ids = self.encode_text(text)
        if len(ids) < 2:
            raise InputError("perplexity needs at least two tokens of text: give a longer text.")
        window = min(PERPLEXITY_WINDOW, self.decoder.context_length - 1)
        nll = 0.0
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window + 1]
            self.decoder.reset()
            nll += next_token_nll(self.decoder.logits(chunk[:-1]), chunk[1:])
        self.decoder.reset()
        return math.exp(nll / (len(ids) - 1))


def _sampling(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
              repetition_penalty: float = 1.0, seed: int | None = None,
              stop: str | Sequence[str] | None = None) -> tuple[Sampler, tuple[str, ...]]:
    """The sampler and stop strings of one generation, from the keyword options."""
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
    return make_sampler(params), ((stop,) if isinstance(stop, str) else tuple(stop or ()))


def next_token_nll(logits: np.ndarray, targets: Sequence[int], rows: int = 64) -> float:
    """Sum over i of -log softmax(logits[i])[targets[i]], in float64, `rows` rows at a time
    so the float64 copy stays small. logits: (n, vocab)."""
    total = 0.0
    for s in range(0, len(targets), rows):
        block = logits[s : s + rows].astype(np.float64)  # (rows, vocab)
        top = block.max(axis=1)  # (rows,)
        log_z = np.log(np.exp(block - top[:, None]).sum(axis=1)) + top
        total += float((log_z - block[np.arange(len(block)), targets[s : s + rows]]).sum())
    return total
