"""A loaded text-generation bundle: prompts, conversations and texts in; text and scores out.

`edge.load(path)` returns a `LanguageModel` holding the manifest, the tokenizer and the
decoder. Its methods take the same keyword names as the CLI flags (max_tokens,
temperature, top_k, top_p, min_p, repetition_penalty, seed, stop, raw), so the CLI is a
thin layer over it.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.generation import generate
from edge.bundle import Bundle
from edge.generation.chat import ChatSession
from edge.generation.chat_template import Message, check_template, render
from edge.engine.batch_runner import BatchRunner
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import IncompleteOutputError, InputError, check_positive_int, check_prompt
from edge.generation.constraints import Grammar, grammar_text
from edge.generation.generate import StreamChunk, Timings, check_draft
from edge.manifest import Manifest
from edge.generation.sampler import SamplingParams, make_sampler
from edge.generation.scheduler import DEFAULT_KV_TOKENS, DEFAULT_SLOTS, Request, Scheduler
from edge.tokenizer import Tokenizer, load_tokenizer

DEFAULT_MAX_TOKENS = 256
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
PERPLEXITY_WINDOW = 512  # next-token predictions per window of `score`


@dataclass(frozen=True)
class Completion:
    """A whole generation: its text, why it ended and what it cost."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    complete: bool | None = None  # with a constraint: whether the text fits it whole

    @classmethod
    def of(cls, chunks: list[StreamChunk]) -> Completion:
        t = chunks[-1].timings
        return cls("".join(c.text for c in chunks), chunks[-1].finish_reason, t.prompt_tokens,
                   t.completion_tokens, t, chunks[-1].complete)


def _whole(chunks: Iterator[StreamChunk]) -> str:
    """The text of a whole reply; a constrained one cut before its end is an error, not a result."""
    parts, last = [], None
    for last in chunks:
        parts.append(last.text)
    text = "".join(parts)
    if last is not None and last.complete is False:
        raise IncompleteOutputError(text)
    return text


def _options(method):
    """Name the valid keywords when a call misspells one (Python's own TypeError does not)."""
    signature = inspect.signature(method)

    @functools.wraps(method)  # help() and IDEs still see the explicit signature
    def checked(*args, **kwargs):
        unknown = sorted(set(kwargs) - set(signature.parameters))
        if unknown:
            valid = [n for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY]
            raise TypeError(f"{method.__name__}() got an unexpected keyword {unknown[0]!r}; "
                            f"valid keywords: {', '.join(valid)}")
        return method(*args, **kwargs)

    return checked


def _given(arguments: dict) -> dict:
    """A method's keyword options, from its locals(), for passing on."""
    return {k: v for k, v in arguments.items() if k not in ("self", "prompt", "messages", "system")}


class LanguageModel:
    """A loaded generation bundle. Thread-safe for generation: every `generate`, `stream`,
    `chat` call and every chat session runs on a KV cache of its own over the one shared
    onnxruntime session, so streams may be interleaved and threads may call it at once (each
    gets exactly the output it would get alone; they share the CPU). A `ChatSession` itself
    is one conversation: use it from one thread at a time."""

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, decoder: DecoderRunner, load_s: float = 0.0,
                 tokenizer_file: Path | None = None, path: Path | None = None):
        self.path = path  # the bundle folder, when opened from one
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.load_s = load_s  # reported in the timings of every generation
        self.tokenizer_file = tokenizer_file  # the bundle's tokenizer.json, for structured output
        self._guidance = None  # llguidance's tokenizer, made on the first constrained call

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None, started: float | None = None) -> LanguageModel:
        """`started`: when loading began (perf_counter), if before this call (bundle checks)."""
        started = time.perf_counter() if started is None else started
        check_template(bundle.manifest.tokenizer, bundle.path)
        tokenizer_file = bundle.file(bundle.manifest.tokenizer.file, "tokenizer.file")
        tokenizer = load_tokenizer(tokenizer_file)
        decoder = DecoderRunner.open(bundle, threads)
        return cls(bundle.manifest, tokenizer, decoder, time.perf_counter() - started, tokenizer_file, bundle.path)

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

    def encode_chat(self, messages: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The template writes every special token itself, as transformers' apply_chat_template
        (`tools`: OpenAI tool definitions, for templates that render them)."""
        return self.tokenizer.encode(render(messages, self.manifest.tokenizer, tools=tools))

    # --- generation ------------------------------------------------------------------------
    # Every method takes the same sampling keywords (explicit, so an IDE and help() show them);
    # a misspelt one is a TypeError that lists the valid names (see `_options`).

    @_options
    def generate(self, prompt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, draft: str = "lookup",
                 raw: bool = False, json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                 choices: Sequence[str] | None = None) -> str:
        """The reply to `prompt` (one user message through the chat template; `raw`: plain
        text to continue). `temperature` > 0 samples (with `top_k`, `top_p`, `min_p`,
        `repetition_penalty`, and `seed` for repeatable output); 0 is greedy. A sampling
        option left None takes the bundle's recommendation (the source's
        generation_config.json, `manifest.sampling`), else greedy with every filter off.
        `stop`: strings that end the reply (not included). `draft`: "lookup" (default)
        checks tokens guessed from the text itself several per step, same output (on 8-bit
        bundles a near-tie may round the other way: multi-token kernels round differently); "none".
        Structured output, one of: `json_schema` (a dict, JSON text or pydantic model
        class), `regex`, `grammar` (Lark, as llguidance reads it), `choices` (a list of
        strings); a reply cut by max_tokens before the structure is complete raises
        `IncompleteOutputError` (its `.text` holds what was generated)."""
        return _whole(self.stream(prompt, **_given(locals())))

    @_options
    def stream(self, prompt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
               seed: int | None = None, stop: str | Sequence[str] | None = None, draft: str = "lookup",
               raw: bool = False, json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
               choices: Sequence[str] | None = None) -> Iterator[StreamChunk]:
        """As `generate`, one `StreamChunk` per token (text, token, finish_reason, and the
        timings on the last; with a constraint, `complete` on the last)."""
        options = _given(locals())
        return self.stream_ids(self.encode_prompt(prompt, options.pop("raw")), **options)

    @_options
    def complete(self, prompt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, draft: str = "lookup",
                 raw: bool = False, json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                 choices: Sequence[str] | None = None) -> Completion:
        """As `generate`, with why it ended and the token counts (llama-cpp-python's shape):
        `Completion(text, finish_reason, prompt_tokens, completion_tokens, timings, complete)`,
        `complete` False when a constrained reply was cut before its structure ended."""
        return Completion.of(list(self.stream(prompt, **_given(locals()))))

    @_options
    def chat(self, messages: list[Message], *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
             top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
             seed: int | None = None, stop: str | Sequence[str] | None = None, draft: str = "lookup",
             json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
             choices: Sequence[str] | None = None) -> str:
        """The assistant's reply to `messages` ([{"role": ..., "content": ...}, ...]); the
        keywords as in `generate`."""
        return _whole(self.stream_chat(messages, **_given(locals())))

    @_options
    def stream_chat(self, messages: list[Message], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                    temperature: float | None = None, top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                    repetition_penalty: float | None = None, seed: int | None = None,
                    stop: str | Sequence[str] | None = None, draft: str = "lookup", json_schema: Any = None,
                    regex: str | None = None, grammar: str | None = None,
                    choices: Sequence[str] | None = None) -> Iterator[StreamChunk]:
        """As `chat`, one `StreamChunk` per token."""
        return self.stream_ids(self.encode_chat(messages), **_given(locals()))

    @_options
    def chat_session(self, system: str | None = None, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                     temperature: float | None = None, top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                     repetition_penalty: float | None = None, seed: int | None = None,
                     stop: str | Sequence[str] | None = None, draft: str = "lookup", json_schema: Any = None,
                     regex: str | None = None, grammar: str | None = None,
                     choices: Sequence[str] | None = None) -> ChatSession:
        """A conversation that keeps its KV cache across turns: `session.send(text)` streams
        each reply. The keywords (as in `generate`) are the session's defaults; `send` may
        override them per turn."""
        return ChatSession(self, system, **_given(locals()))

    def stream_ids(self, ids: Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
                   top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
                   seed: int | None = None, stop: str | Sequence[str] | None = None, draft: str = "lookup",
                   json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                   choices: Sequence[str] | None = None, decoder: DecoderRunner | None = None,
                   reuse: int = 0, ignore_eos: bool = False) -> Iterator[StreamChunk]:
        """Token ids in, chunks out. A chat session passes its own `decoder` and how many
        leading ids its cache already holds (`reuse`). `ignore_eos`: EOS does not end the
        reply (max_tokens or a stop string does), for load tests of a fixed length."""
        params = self.sampling_params(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                      repetition_penalty=repetition_penalty, seed=seed)
        sampler, stops = make_sampler(params), _stops(stop)
        constraint = self.constraint(json_schema=json_schema, regex=regex, grammar=grammar, choices=choices)
        # Each generation runs on a cache of its own (a fork shares the session and weights),
        # so interleaved streams and threads never see each other's tokens.
        return generate.stream(decoder or self.decoder.fork(), self.tokenizer, list(ids), sampler, max_tokens,
                               eos_ids=self._eos_ids(ignore_eos, constraint), stop=stops, reuse=reuse,
                               draft=check_draft(draft), load_s=self.load_s,
                               matcher=constraint.matcher() if constraint else None)

    def _eos_ids(self, ignore_eos: bool, constraint: object = None) -> tuple[int, ...]:
        """The ids that end a reply: none with `ignore_eos`, except under a constraint, whose
        grammar allows only EOS once it is complete (text after it would not parse)."""
        if not isinstance(ignore_eos, bool):
            raise InputError(f"{{param}} must be true or false, got {ignore_eos!r}.", param="ignore_eos")
        return () if ignore_eos and constraint is None else tuple(self.manifest.tokenizer.eos_token_ids)

    def constraint(self, *, json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                   choices: Sequence[str] | None = None) -> Grammar | None:
        """The structured-output grammar these arguments ask for, compiled and checked for this
        model's tokenizer (None without one); an invalid one is an InputError naming it."""
        found = grammar_text(json_schema=json_schema, regex=regex, grammar=grammar, choices=choices)
        if found is None:
            return None
        if self._guidance is None:  # ~0.7 s for SmolLM2's vocabulary: once per model
            import llguidance

            spec = self.manifest.tokenizer
            if self.tokenizer_file is None:
                raise InputError("structured output needs the bundle's tokenizer.json: open the model with edge.load.")
            self._guidance = llguidance.LLTokenizer(
                self.tokenizer_file.read_text(encoding="utf-8"), n_vocab=self.manifest.model.vocab_size,
                eos_token=list(spec.eos_token_ids) or None)
        return Grammar(self._guidance, *found)

    def sampling_params(self, **given) -> SamplingParams:
        """The caller's sampling options; each one None (or left out) takes the bundle's
        recommendation, else SamplingParams' default (greedy, filters off).
        Example: bundle temperature 0.7, top_p 0.9; given top_p=1 -> temperature 0.7, top_p 1"""
        recommended = self.manifest.sampling
        values = {name: given.get(name) if given.get(name) is not None else getattr(recommended, name, None)
                  for name in SAMPLING_OPTIONS}
        return SamplingParams(**{name: value for name, value in values.items() if value is not None})

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the onnxruntime session now (sessions and streams of this model stop working)."""
        self.decoder.session.close()

    def __enter__(self) -> LanguageModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
                max_tokens: int = DEFAULT_MAX_TOKENS, draft: str = "lookup",
                cancelled: Callable[[], bool] = lambda: False, json_schema: Any = None, regex: str | None = None,
                grammar: str | None = None, choices: Sequence[str] | None = None,
                stop: str | Sequence[str] | None = None, ignore_eos: bool = False, **sampling) -> Request:
        """One generation for a `scheduler()`, with the options of `stream_ids`; its chunks go
        to `sink`. `draft` applies while the request decodes alone (batch 1); batched steps
        check no drafts. A constraint masks every step."""
        check_draft(draft)
        unknown = sorted(set(sampling) - set(SAMPLING_OPTIONS))
        if unknown:
            raise TypeError(f"request() got an unexpected keyword {unknown[0]!r}; valid keywords: "
                            f"{', '.join(SAMPLING_OPTIONS)}, stop, ignore_eos, json_schema, regex, grammar, choices")
        sampler, stops = make_sampler(self.sampling_params(**sampling)), _stops(stop)
        constraint = self.constraint(json_schema=json_schema, regex=regex, grammar=grammar, choices=choices)
        return Request(list(ids), sampler, max_tokens, sink, self._eos_ids(ignore_eos, constraint), stops, cancelled,
                       constraint.matcher() if constraint else None, draft)

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

    def perplexity(self, text: str, progress: Callable[[int, int], None] | None = None) -> float:
        """exp(mean next-token NLL) of the text's tokens, as `score` counts it. `progress(done,
        total)`: called after each window with the tokens scored so far."""
        if not isinstance(text, str):
            raise InputError(f"perplexity needs a string, got {type(text).__name__}.")
        ids = self.encode_text(text)
        if len(ids) < 2:
            raise InputError("perplexity needs at least two tokens of text: give a longer text.")
        return math.exp(score(self.decoder, ids, progress).mean_nll)


@dataclass(frozen=True)
class Scores:
    mean_nll: float  # mean negative log-likelihood of each token after the first
    argmax: np.ndarray  # (n - 1,) the model's top-1 guess for each of those tokens


def score(decoder: DecoderRunner, ids: Sequence[int], progress: Callable[[int, int], None] | None = None) -> Scores:
    """Teacher-forced scores of `ids` (at least two), from a fresh cache in windows of at most
    PERPLEXITY_WINDOW predictions; consecutive windows share one token, so every token after
    the first is predicted once. `perplexity` and the exporter's quality report both count so."""
    window = min(PERPLEXITY_WINDOW, decoder.context_length - 1)
    nll, argmax = 0.0, []
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start : start + window + 1]
        decoder.reset()
        logits = decoder.logits(chunk[:-1])  # (len(chunk) - 1, vocab)
        nll += next_token_nll(logits, chunk[1:])
        argmax.append(logits.argmax(-1))
        if progress:
            progress(min(start + window, len(ids) - 1), len(ids) - 1)
    decoder.reset()
    return Scores(nll / (len(ids) - 1), np.concatenate(argmax))


def _stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Example: "END" -> ("END",); None -> ()"""
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


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
