"""A loaded encoder bundle: texts in, one float32 vector per text out.

    model = edge.load("all-minilm-l6-v2-int8")
    vectors = model.embed(["a cat", "a dog"])   # (2, model.dim), unit length if the model says so

texts -> tokenizer ([CLS] ... [SEP], cut to the model's max length) -> batches of similar
length (little padding) -> encoder -> pooling (mean or CLS, from the manifest) -> L2
normalisation when the manifest asks for it. Rows come back in the order of `texts`.

Documented edge cases: an empty list gives a (0, dim) array; an empty string is embedded
as [CLS] [SEP] alone, as sentence-transformers does; anything that is not a list of
strings is an InputError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.engine.encoder_runner import EncoderRunner
from edge.errors import BundleError, InputError, check_text
from edge.manifest import Manifest
from edge.embeddings.pooling import l2_normalize, pooler
from edge.tokenizer import Encoding, Tokenizer, load_tokenizer

DEFAULT_BATCH_SIZE = 32


class EmbeddingModel:
    """A loaded encoder bundle: texts in, unit (or pooled) vectors out. Thread-safe: `embed`
    keeps no state between calls."""

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, encoder: EncoderRunner, path: Path | None = None):
        if manifest.pooling is None:
            raise BundleError("this feature-extraction bundle has no pooling in its manifest. Re-export it.")
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.path = path  # the bundle folder, when opened from one
        self.pooling = manifest.pooling
        self._pool = pooler(self.pooling.mode)

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> EmbeddingModel:
        tokenizer = load_tokenizer(bundle.file(bundle.manifest.tokenizer.file, "tokenizer.file"))
        return cls(bundle.manifest, tokenizer, EncoderRunner.open(bundle, threads), bundle.path)

    @property
    def dim(self) -> int:
        return self.manifest.model.hidden_size

    def close(self) -> None:
        """Release the onnxruntime session now; later calls raise an InputError."""
        self.encoder.session.close()

    def __enter__(self) -> EmbeddingModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def identity(self) -> str:
        """sha256 of the manifest (which holds every file's checksum): same value, same vectors."""
        return hashlib.sha256(self.manifest.to_json().encode("utf-8")).hexdigest()

    @property
    def max_length(self) -> int:
        """Tokens per text, [CLS] and [SEP] included; longer texts are cut to fit."""
        return self.pooling.max_length

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Each text framed and cut to `max_length`; `Encoding.truncated` tells which were cut."""
        _check_texts(texts)
        return [self.tokenizer.encode_for_model(text, self.max_length) for text in texts]

    def embed(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """(len(texts), dim) float32, one row per text in order."""
        return self.embed_encodings(self.tokenize(texts), batch_size)

    def embed_encodings(self, encodings: Sequence[Encoding], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Vectors for already tokenized texts, run in batches grouped by length."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
        out = np.empty((len(encodings), self.dim), dtype=np.float32)  # (N, dim)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")  # shortest first
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            hidden, mask = self.encoder.run([encodings[i] for i in rows])  # (B, S, H), (B, S)
            out[rows] = self._pool(hidden, mask)
        return l2_normalize(out) if self.pooling.normalize else out


def _check_texts(texts) -> None:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError(f"embed takes a list of strings, got {type(texts).__name__}. Wrap one text in a list.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string. Pass strings only.")
        check_text(text, "texts")
