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
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.errors import BundleError
from edge.manifest import TensorRef


class TokenRows:
    def __init__(self, codes: _Table, scales: _Table, blocks: int):
        self.codes, self.scales, self.blocks = codes, scales, blocks
        self.hidden = codes.row_items

    @classmethod
    def open(cls, bundle: Bundle) -> TokenRows:
        found = bundle.manifest.inspect
        if found is None or found.embedding_scales is None:
            raise BundleError(f"bundle {bundle.path} takes embedding rows but names no int8 table. "
                              "Re-export it with `edge export`.")
        return cls(_Table.open(bundle, found.embedding), _Table.open(bundle, found.embedding_scales),
                   found.embedding_scales.shape[1])

    def lookup(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows of `ids` (seq,) as (seq, hidden) float32, written into `out` when given."""
        ids = ids.tolist()
        codes = self.codes.rows(ids).reshape(len(ids), self.blocks, -1)
        scales = self.scales.rows(ids).reshape(len(ids), self.blocks, 1)
        out = np.empty((len(ids), self.hidden), dtype=np.float32) if out is None else out
        np.multiply(codes, scales, out=out.reshape(codes.shape))
        return out


class _Table:
    """A (rows, items) array in a bundle file, read a row at a time."""

    def __init__(self, path: Path, ref: TensorRef):
        self.dtype = np.dtype(ref.dtype)
        self.row_items = ref.shape[1]
        self.row_bytes = self.row_items * self.dtype.itemsize
        self.offset = ref.offset
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (kept open while the decoder lives)

    @classmethod
    def open(cls, bundle: Bundle, ref: TensorRef) -> _Table:
        return cls(bundle.tensor_file(ref), ref)

    def rows(self, ids: list[int]) -> np.ndarray:
        fd, size, start = self._file.fileno(), self.row_bytes, self.offset
        return np.frombuffer(b"".join(os.pread(fd, size, start + i * size) for i in ids), dtype=self.dtype)
