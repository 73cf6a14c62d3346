"""The bundle's lookup tables, read straight from its files with numpy.

In: a bundle and a `TensorRef` from its manifest (file, byte offset, shape, dtype, written
by the exporter). Out: a read-only (memory-mapped) array. Bundles exported before
inspection existed have no refs: the error says to re-export.
"""

from __future__ import annotations

import numpy as np

from edge.bundle import Bundle
from edge.engine.token_rows import dequantize_rows
from edge.errors import BundleError
from edge.manifest import Inspection, TensorRef


def inspection(bundle: Bundle) -> Inspection:
    found = bundle.manifest.inspect
    if found is None:
        raise BundleError(
            f"bundle {bundle.path} has no inspection data (exported by an older edge). "
            "Re-export it with `edge export SOURCE -o DIR` to inspect embeddings and attention."
        )
    return found


def read(bundle: Bundle, ref: TensorRef) -> np.ndarray:
    """The array `ref` points at, mapped read-only from the bundle file."""
    path = bundle.tensor_file(ref)
    return np.memmap(path, dtype=np.dtype(ref.dtype), mode="r", offset=ref.offset, shape=tuple(ref.shape))


def token_embeddings(bundle: Bundle) -> np.ndarray:
    """The input embedding table (vocab, hidden) float32, dequantized as the graph does:
    int8 codes times one scale per block of each row."""
    found = inspection(bundle)
    table = read(bundle, found.embedding)  # (V, H)
    if found.embedding_scales is None:
        return np.asarray(table, dtype=np.float32)
    return dequantize_rows(table, read(bundle, found.embedding_scales))  # scales (V, H / block)
