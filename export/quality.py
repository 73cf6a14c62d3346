"""Measure what quantization cost: the quantized graph against the fp32 one, run by the
edge runtime itself on texts that ship with the exporter.

Decoders: in two decoders and token ids of a held-out English text; out perplexity of
each, teacher-forced top-1 agreement (the steady measure) and greedy-continuation agreement.
Encoders: in two embedding models; out the cosine between their vectors for a fixed set
of sentences (mean and minimum).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from edge.generation.chat import common_prefix
from edge.engine.decoder_runner import DecoderRunner
from edge.generation.model import score
from edge.manifest import Quality

HELDOUT = "heldout.txt"
SENTENCES = "sentences.txt"
GREEDY_PROMPTS = (
    "The history of the printing press",
    "def fibonacci(n):",
    "Water boils at",
    "My favourite way to spend a Sunday is",
)
GREEDY_TOKENS = 32
MAX_TOKENS = 2048


def heldout_text() -> str:
    return _data(HELDOUT)


def sentences() -> list[str]:
    """The fixed sentences encoders are measured on: one per line, varied on purpose."""
    return [line for line in _data(SENTENCES).splitlines() if line.strip()]


def _data(name: str) -> str:
    return resources.files("export").joinpath("data", name).read_text(encoding="utf-8")


def greedy(decoder: DecoderRunner, prompt: list[int], n: int) -> list[int]:
    decoder.reset()
    out = [int(decoder.prefill(prompt).argmax())]
    while len(out) < n:
        out.append(int(decoder.decode_step(out[-1]).argmax()))
    decoder.reset()
    return out


def measure(reference: DecoderRunner, quantized: DecoderRunner | None, encode, log=lambda message: None) -> Quality:
    """Perplexity of both graphs, and how often the quantized one picks fp32's token. `log`:
    one line as each part begins (each takes seconds to a minute on a 2-core CPU)."""
    ids = encode(heldout_text())[:MAX_TOKENS]
    log(f"quality: fp32 perplexity over {len(ids)} tokens")
    ref = score(reference, ids)
    ppl_ref = float(np.exp(ref.mean_nll))
    if quantized is None:
        return Quality(text=HELDOUT, tokens=len(ids), perplexity_fp32=ppl_ref, perplexity=ppl_ref,
                       top1_agreement=1.0, greedy_agreement=1.0)
    log("quality: quantized perplexity and top-1 agreement")
    quant = score(quantized, ids)
    prompts = [encode(p) for p in GREEDY_PROMPTS]
    steps = min(GREEDY_TOKENS, reference.context_length - max(len(p) for p in prompts))
    log(f"quality: greedy continuations of {len(prompts)} prompts, {steps} tokens each")
    matched = sum(common_prefix(greedy(reference, p, steps), greedy(quantized, p, steps)) for p in prompts)
    return Quality(
        text=HELDOUT,
        tokens=len(ids),
        perplexity_fp32=ppl_ref,
        perplexity=float(np.exp(quant.mean_nll)),
        top1_agreement=float((ref.argmax == quant.argmax).mean()),
        greedy_agreement=matched / (steps * len(prompts)),
    )


def measure_cosine(reference, quantized) -> Quality:
    """Cosine between fp32 and quantized sentence vectors (`EmbeddingModel`s) on `sentences()`."""
    texts = sentences()
    ref, quant = reference.embed(texts), quantized.embed(texts)  # (n, dim) each
    cosine = (ref * quant).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(quant, axis=1))  # (n,)
    return Quality(text=SENTENCES, tokens=len(texts), cosine_mean=float(cosine.mean()),
                   cosine_min=float(cosine.min()))
