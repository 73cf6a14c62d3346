"""edge: run quantized transformer bundles on-device, offline.

    import edge
    model = edge.load("path/to/bundle")
    print(model.generate("Why is the sky blue?", max_tokens=64))
    vectors = edge.load("path/to/encoder-bundle").embed(["a cat", "a dog"])   # (2, dim)

Heavy parts (onnxruntime, the tokenizer) load inside `load`, so `import edge` stays cheap;
`edge.LanguageModel` and `edge.EmbeddingModel` (for type hints) import them on first use.
"""

from __future__ import annotations

from edge.errors import EdgeError

# typing.TYPE_CHECKING without importing typing: `import edge` (and so the `edge` command's
# start, before it can catch Ctrl-C) imports nothing Python has not loaded already.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Union

    from edge.embeddings.ask import Answer, ask, ask_stream
    from edge.embeddings.model import EmbeddingModel
    from edge.generation.generate import StreamChunk, Timings
    from edge.generation.model import Completion, LanguageModel
    from edge.generation.sampler import SamplingParams

__all__ = ["load", "LanguageModel", "EmbeddingModel", "Completion", "EdgeError", "StreamChunk", "Timings",
           "SamplingParams", "ask", "ask_stream", "Answer", "__version__"]

# The model types live beside onnxruntime, the others beside numpy; each is imported when
# first named (PEP 562), so `import edge` (and the CLI's start) imports neither.
_LAZY = {"LanguageModel": "edge.generation.model", "EmbeddingModel": "edge.embeddings.model",
         "Completion": "edge.generation.model", "StreamChunk": "edge.generation.generate",
         "Timings": "edge.generation.generate", "SamplingParams": "edge.generation.sampler",
         "ask": "edge.embeddings.ask", "ask_stream": "edge.embeddings.ask", "Answer": "edge.embeddings.ask"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("edge-runtime")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'edge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API only (not the subpackages and helpers a module namespace also holds)."""
    return sorted(__all__)


def load(model: str | Path | None = None, threads: int | None = None) -> Union[LanguageModel, EmbeddingModel]:
    """Open a bundle: a `LanguageModel` for text generation, an `EmbeddingModel` for
    feature extraction. `model`: a bundle folder, or a model name in the edge cache
    (`edge models`); None: $EDGE_MODEL, else the default model. `threads`: onnxruntime
    intra-op threads (default: physical cores)."""
    import time

    from edge.bundle import open_bundle, verifying
    from edge.paths import resolve_model
    from edge.tools.doctor import warn_if_unsuited

    started = time.perf_counter()
    bundle = open_bundle(resolve_model(model), verify=False)  # checksums: while the model opens, below
    warn_if_unsuited(bundle.manifest)
    with verifying(bundle):
        if bundle.manifest.is_decoder:
            from edge.generation.model import LanguageModel

            return LanguageModel.open(bundle, threads, started)
        from edge.embeddings.model import EmbeddingModel

        return EmbeddingModel.open(bundle, threads)
