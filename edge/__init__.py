"""edge: run quantized transformer bundles on-device, offline.

    import edge
    model = edge.load("path/to/bundle")
    print(model.generate("Why is the sky blue?", max_tokens=64))
    vectors = edge.load("path/to/encoder-bundle").embed(["a cat", "a dog"])   # (2, dim)

Heavy parts (onnxruntime, the tokenizer) load inside `load`, so `import edge` stays cheap.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.errors import BundleError, EdgeError
from edge.generate import Chunk, Timings
from edge.sampler import SamplingParams

__all__ = ["load", "EdgeError", "Chunk", "Timings", "SamplingParams"]


def load(path: str | Path, threads: int | None = None):
    """Open a bundle: a `LanguageModel` for text generation, an `EmbeddingModel` for
    feature extraction. `threads`: onnxruntime intra-op threads (default: physical cores)."""
    from edge.bundle import open_bundle, verifying
    from edge.doctor import warn_if_unsuited

    started = time.perf_counter()
    bundle = open_bundle(path, verify=False)  # checksums: while the model opens, below
    warn_if_unsuited(bundle.manifest)
    with verifying(bundle):
        return _open(bundle, threads, started)


def _open(bundle, threads: int | None, started: float):
    if bundle.manifest.is_decoder:
        from edge.llm import LanguageModel

        return LanguageModel.open(bundle, threads, started)
    try:
        from edge.embed import EmbeddingModel
    except ModuleNotFoundError as exc:
        if exc.name != "edge.embed":
            raise
        raise BundleError(
            f"{bundle.path} is a {bundle.manifest.model.task} bundle, but this edge has no embedding support "
            "(edge.embed is missing). Install a complete edge."
        ) from None
    return EmbeddingModel.open(bundle, threads)
