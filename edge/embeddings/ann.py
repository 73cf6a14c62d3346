"""Approximate nearest neighbours for large indexes: a usearch HNSW graph over int8 copies of
the rows, whose candidates are then scored exactly on the float32 vectors.

In: an index's vectors (rows, dim), unit rows. Out: `ann-<id>.usearch` (usearch's own binary
format, memory-mapped at search: no pickle) and its manifest record. Why usearch, int8 and
the settings: benchmarks/README.md (ann_compare.py): int8 + rescoring of RESCORE candidates
keeps recall@10 of float32 graphs at a quarter of the file; hnswlib has no wheels (a
compiler on every Pi), faiss-cpu cannot map an HNSW file (it reads it whole: ~1.7 GB at 1M).

usearch is optional (the `scale` extra): without it an index is built without a graph and
searched exactly, and an index that has one is searched exactly, with a note. The graph
file is native input: before edge maps it for usearch's view() it checks its sha256 (from the manifest),
its header (dimensions, scalar kind, metric) and its row count; `edge search --exact`
never opens it.
"""

from __future__ import annotations

import importlib.util
import mmap
import uuid
from pathlib import Path

import numpy as np

from edge.bundle import sha256

MIN_ROWS = 100_000  # below it brute force is exact and fast enough (see benchmarks/README.md)
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64
DTYPE, METRIC = "i8", "ip"  # unit rows: inner product is the cosine
RESCORE = 40  # candidates the graph returns per query, re-scored on the float32 rows
ADD_ROWS = 65_536  # rows handed to usearch at once while building (from the memory maps)
MISSING = ("usearch is not installed, so the {rows:,} chunks are searched exactly by brute force (slower); "
           "pip install 'edge-runtime[scale]' for approximate search")


def available() -> bool:
    return importlib.util.find_spec("usearch") is not None


def _usearch_index():
    """usearch's Index class, with onnxruntime loaded first: loading onnxruntime's extension
    after usearch's crashes the process (a segfault in libstdc++'s codecvt under onnxruntime's
    start-up; usearch 2.26.6, onnxruntime 1.32, x86_64)."""
    import onnxruntime  # noqa: F401

    from usearch.index import Index

    return Index


def build(out: Path, vectors: list[np.ndarray], threads: int | None) -> tuple[dict, str]:
    """Write the graph over `vectors` (each (n, dim), in row order); its record and checksum."""
    Index = _usearch_index()
    dim, rows = vectors[0].shape[1], sum(len(v) for v in vectors)
    index = Index(ndim=dim, metric=METRIC, dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                  expansion_search=EXPANSION_SEARCH)
    start = 0
    for part in vectors:
        for lo in range(0, len(part), ADD_ROWS):
            block = np.ascontiguousarray(part[lo : lo + ADD_ROWS])  # (<= ADD_ROWS, dim), read from the map
            index.add(np.arange(start, start + len(block), dtype=np.uint64), block, threads=threads or 0)
            start += len(block)
    name = f"ann-{uuid.uuid4().hex[:12]}.usearch"
    index.save(str(out / name))
    record = {"file": name, "library": "usearch", "rows": rows, "dim": dim, "dtype": DTYPE, "metric": METRIC,
              "connectivity": CONNECTIVITY, "expansion_search": EXPANSION_SEARCH, "rescore": RESCORE}
    return record, sha256(out / name)


class Graph:
    """An opened graph: `candidates(vector, count)` -> (count,) int64 row numbers, best first."""

    def __init__(self, folder: Path, record: dict, checksum: str, rows: int, dim: int, threads: int | None):
        Index = _usearch_index()
        file = folder / record["file"]
        if record["rows"] != rows or record["dim"] != dim or record["dtype"] != DTYPE or record["metric"] != METRIC:
            raise ValueError(f"{record['file']} is described as {record['rows']} x {record['dim']} "
                             f"{record['dtype']} {record['metric']}, expected {rows} x {dim} {DTYPE} {METRIC}")
        if sha256(file) != checksum:
            raise ValueError(f"{record['file']} does not match its checksum")
        try:
            header = Index.metadata(str(file)) or {}
        except (RuntimeError, ValueError) as exc:  # usearch's words for a file it cannot read
            raise ValueError(f"{record['file']}'s header is not usearch's ({exc})") from None
        found = (header.get("dimensions"), header.get("count_present"),
                 *(getattr(header.get(k), "name", "?").lower() for k in ("kind_scalar", "kind_metric")))
        if found != (dim, rows, DTYPE, METRIC):
            raise ValueError(f"{record['file']}'s header says {found}, expected ({dim}, {rows}, {DTYPE}, {METRIC})")
        # No key lookups: edge's keys are the row numbers and it never asks for a key's vector;
        # usearch's key -> slot table was 32 MB and half of view()'s time at 1M rows. Without it
        # usearch 2.26.6 answers get/contains/count/`in`/index[key] as if no key were present
        # (None, False, 0), silently: only search() and len() may be used on self.index.
        self.index = Index(ndim=dim, metric=METRIC, dtype=DTYPE, connectivity=record["connectivity"],
                           expansion_search=record["expansion_search"], enable_key_lookups=False)
        with open(file, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # edge's map: usearch only views it
        try:
            self.index.view(self.map)
        except RuntimeError as exc:
            raise ValueError(f"{record['file']}: {exc}") from None
        self.release()  # view() reads every node's header: a third of the file
        if len(self.index) != rows:
            raise ValueError(f"{record['file']} holds {len(self.index)} rows, expected {rows}")
        self.rescore, self.rows, self.threads = record["rescore"], rows, threads or 0

    def candidates(self, vector: np.ndarray, count: int) -> np.ndarray:
        keys = self.index.search(vector, count, threads=self.threads).keys.astype(np.int64)  # (<= count,)
        return keys[(keys >= 0) & (keys < self.rows)]  # a row number outside the index is never trusted

    def release(self) -> None:
        """Unmap the graph's pages (they stay in the page cache). view() reads every node's
        header, a third of the file (145 MB at 1M rows), and Linux maps 64 KiB around each page
        a search faults in (fault-around), so without this `edge search`'s peak held both.
        After searches the pages stay mapped: a long-running process holds up to the file's
        size of clean page cache, which the kernel takes back under memory pressure; releasing
        them after searches made a search ~7x slower (1M rows: ~2 ms to unmap, ~3 ms to map
        again; benchmarks/README.md)."""
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux drops them; macOS and the BSDs may take it as a hint
            self.map.madvise(mmap.MADV_DONTNEED)
