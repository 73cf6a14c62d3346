"""Token embedding rows for decoder graphs that take `inputs_embeds` (quantized bundles).

In: the bundle's int8 table (codes (vocab, hidden), one float32 scale per block of each
row), located by the manifest's `TensorRef`s. Out: (seq, hidden) float32 rows, dequantized
exactly as an in-graph lookup would (codes times their block's scale).

Why outside the graph: onnxruntime maps an initializer from the bundle file, and every
looked-up row then pulls its page and the kernel's fault-around neighbours into the
process's resident set: 25-50 MB of SmolLM2's 31 MB table over a long prompt. `pread`
copies only the ~650 bytes a token needs; the page cache, shared and reclaimable, keeps
the file warm.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.errors import BundleError
from edge.manifest import TensorRef


class TokenRows:
    def __init__(self, codes: _Table, scales: _Table):
        self.codes, self.scales = codes, scales
        self.hidden, self.blocks = codes.row_items, scales.row_items

    @classmethod
    def open(cls, bundle: Bundle) -> TokenRows:
        found, model = bundle.manifest.inspect, bundle.manifest.model
        codes, scales = (found.embedding, found.embedding_scales) if found else (None, None)
        if codes is None or scales is None or not _fits(codes, scales, model.vocab_size, model.hidden_size):
            raise BundleError(f"bundle {bundle.path} takes embedding rows but names no int8 table of "
                              f"{model.vocab_size} x {model.hidden_size}. Re-export it with `edge export`.")
        return cls(_Table.open(bundle, codes), _Table.open(bundle, scales))

    def lookup(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows of `ids` (seq,) as (seq, hidden) float32, written into `out` when given."""
        ids = ids.tolist()
        codes = self.codes.rows(ids).reshape(len(ids), self.hidden)
        scales = self.scales.rows(ids).reshape(len(ids), self.blocks)
        rows = dequantize_rows(codes, scales)
        if out is None:
            return rows
        out[...] = rows
        return out


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 codes (n, hidden) times one scale per block of each row (n, blocks) -> (n, hidden)
    float32, as the graph's own lookup computes them (Cast * scale).
    Example: codes [[1, 2, 3, 4]], scales [[0.5, 2.0]] -> [[0.5, 1.0, 6.0, 8.0]]"""
    n, blocks = scales.shape
    blocked = codes.reshape(n, blocks, -1)  # (n, blocks, block)
    return np.multiply(blocked, scales[:, :, None], dtype=np.float32).reshape(codes.shape)


def _fits(codes: TensorRef, scales: TensorRef, vocab: int, hidden: int) -> bool:
    """int8 codes (vocab, hidden) and float32 scales (vocab, blocks), blocks dividing hidden."""
    return (codes.dtype == "int8" and scales.dtype == "float32" and len(codes.shape) == len(scales.shape) == 2
            and codes.shape[0] == scales.shape[0] >= vocab and codes.shape[1] == hidden
            and 0 < scales.shape[1] and hidden % scales.shape[1] == 0)


class _Table:
    """A (rows, items) array in a bundle file, read a row at a time."""

    def __init__(self, path: Path, ref: TensorRef):
        self.dtype = np.dtype(ref.dtype)
        self.row_items = ref.shape[1]
        self.row_bytes = self.row_items * self.dtype.itemsize
        self.offset = ref.offset
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)  # closed with the table (no file object to leak)

    @classmethod
    def open(cls, bundle: Bundle, ref: TensorRef) -> _Table:
        return cls(bundle.tensor_file(ref), ref)

    def rows(self, ids: list[int]) -> np.ndarray:
        size, start = self.row_bytes, self.offset
        return np.frombuffer(b"".join(os.pread(self._fd, size, start + i * size) for i in ids), dtype=self.dtype)
