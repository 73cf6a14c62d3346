"""edge's own speed figures on one bundle: load, time to first token, prefill and decode
tokens/s at short and long context, per-step Python overhead, decode with and without
prompt-lookup drafts on a reply that quotes its prompt, peak RSS.

In: a bundle path (and optionally the prompts, as token ids). Out: a flat dict of figures.
It drives the decoder directly (greedy argmax, EOS ignored) so every run decodes the same
number of tokens; `edge bench` and benchmarks/*.py print it. benchmarks/compare.py feeds
the same `prompts` to the other runtimes.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

SHORT, LONG, DECODE, LONG_CONTEXT = 40, 500, 128, 1000  # capped by the model's context window
_QUESTION = "Give me three tips for a healthy vegetable garden."  # 40 tokens with SmolLM2's template
_QUOTE = "Repeat the following paragraph word for word:\n\n"
_FILLER = (
    "The lighthouse keeper wrote about ships, storms and the price of flour in the village, "
    "and measured the tide every day at noon with a marked pole. "
)


def prompts(model) -> dict[str, list[int]]:
    """The token ids every runtime is fed: `short` a ~40-token chat prompt (plain text when
    the bundle has no template), `long` ~500 tokens of prose, `context` the long-context
    prefix; each capped so the decode steps after it fit the context window."""
    filler = model.tokenizer.encode(_FILLER * 80)  # plenty of real tokens
    window = model.decoder.context_length
    short = model.encode_prompt(_QUESTION) if model.manifest.tokenizer.chat_template else filler[:SHORT]
    short = short[: window - DECODE - 1]
    passage = model.tokenizer.decode(filler[:150])
    quote = model.encode_prompt(_QUOTE + passage) if model.manifest.tokenizer.chat_template else filler[:150]
    return {"short": short, "long": filler[: min(LONG, window - 1)],
            "context": filler[: min(LONG_CONTEXT, window - DECODE // 4 - 1)],
            "quote": quote[: window - DECODE - 1]}


def run(bundle: str | Path, threads: int | None = None, started: float | None = None,
        ids: dict[str, list[int]] | None = None) -> dict[str, float]:
    """All figures for one bundle; `started` is when the process began, if known; `ids`
    the prompts (default: `prompts(model)`)."""
    import edge

    t0 = time.perf_counter()
    model = edge.load(bundle, threads=threads)
    ready = time.perf_counter()
    decoder = model.decoder
    figures = {"load_s": ready - t0}
    if started is not None:
        figures["start_to_ready_s"] = ready - started
    ids = ids or prompts(model)
    figures.update(short_prompt=len(ids["short"]), long_prompt=len(ids["long"]), long_context=len(ids["context"]))
    decoder.reserve(len(ids["short"]) + DECODE + 1)  # as generate does: the cache is sized once
    figures["ttft_s"], first = _timed(lambda: int(decoder.prefill(ids["short"]).argmax()))
    figures["prefill_tok_s_short"] = len(ids["short"]) / figures["ttft_s"]
    figures["decode_tok_s"], figures["python_overhead"] = _decode(model, first, DECODE)
    decoder.reset()
    seconds, _ = _timed(lambda: decoder.prefill(ids["long"]))
    figures["prefill_tok_s_long"] = len(ids["long"]) / seconds
    decoder.reset()
    decoder.reserve(len(ids["context"]) + DECODE // 4 + 1)
    last = int(decoder.prefill(ids["context"]).argmax())
    figures["decode_tok_s_long_context"], _ = _decode(model, last, DECODE // 4)
    if "quote" in ids:  # compare.py feeds the other runtimes' prompts only
        for draft in ("none", "lookup"):
            figures[f"decode_tok_s_quote_{draft}"], accepted = _drafted(model, ids["quote"], draft)
        figures["draft_accepted_share"] = accepted
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _decode(model, token: int, steps: int) -> tuple[float, float]:
    """Greedy steps/s, and the share of each step spent outside onnxruntime's run."""
    session, inside = model.decoder.session, [0.0]

    def timing(method):
        def timed(*args):
            start = time.perf_counter()
            result = method(*args)
            inside[0] += time.perf_counter() - start
            return result

        return timed

    session.run, session.run_bound = timing(session.run), timing(session.run_bound)
    start = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(model.decoder.decode_step(token)))
    total = time.perf_counter() - start
    del session.run, session.run_bound  # back to the class's methods
    return steps / total, 1 - inside[0] / total


def _drafted(model, prompt: list[int], draft: str) -> tuple[float, float]:
    """Greedy tokens/s after the first (EOS ignored) through generate_tokens with `draft`,
    and the share of tokens that came from accepted drafts."""
    from edge.generation.generate import DraftStats, generate_tokens
    from edge.generation.sampler import SamplingParams, make_sampler

    stats = DraftStats()
    tokens = generate_tokens(model.decoder, prompt, make_sampler(SamplingParams()), DECODE, draft=draft, stats=stats)
    next(tokens)  # the prefill
    start = time.perf_counter()
    count = sum(1 for _ in tokens)
    return count / (time.perf_counter() - start), stats.accepted / (count + 1)


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM, because `ru_maxrss` survives
    exec and would report the parent's peak in a child process."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024
