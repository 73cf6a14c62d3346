"""Which ANN library for the index (not a test): usearch, hnswlib and faiss-cpu on the same
real MiniLM vectors (the index_scale.py cache), same graph settings (M 16, 128 to build, 64 to
search), 2 threads: build time, recall@10 against exact search, one-query latency p50/p95,
file size. Run it in a scratch venv, not edge's:

    python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy usearch hnswlib faiss-cpu
    /tmp/annvenv/bin/python benchmarks/ann_compare.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

K, M, EF_ADD, EF_SEARCH, THREADS = 10, 16, 128, 64, 2


def cache() -> Path:
    home = os.environ.get("EDGE_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge"
    return Path(home) / "bench" / "index_scale"


def load(rows: int) -> tuple[np.ndarray, np.ndarray]:
    starts = range(0, rows, 10_000)
    data = np.concatenate([np.load(cache() / f"vectors-{s:08d}.npy", allow_pickle=False) for s in starts])
    return data[:rows], np.load(cache() / "queries.npy", allow_pickle=False)


def exact(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :K]  # (Q, K)


def usearch_variant(dtype: str, rescore: int = 0):
    def run(data, queries, folder):
        from usearch.index import Index

        binary = dtype == "b1"  # sign bits, packed 8 a byte, compared by Hamming distance
        index = Index(ndim=data.shape[1], metric="hamming" if binary else "ip", dtype=dtype, connectivity=M,
                      expansion_add=EF_ADD, expansion_search=EF_SEARCH)
        prepare = (lambda x: np.packbits(x > 0, axis=-1)) if binary else (lambda x: x)
        t0 = time.perf_counter()
        index.add(np.arange(len(data), dtype=np.uint64), prepare(data), threads=THREADS)
        build = time.perf_counter() - t0
        index.save(str(folder / "u.usearch"))
        index = Index.restore(str(folder / "u.usearch"), view=True)

        def search(q):
            keys = index.search(prepare(q), max(K, rescore), threads=THREADS).keys.astype(np.int64)
            if rescore:
                keys = keys[np.argsort(-(data[keys] @ q), kind="stable")]
            return keys[:K]
        return build, search, (folder / "u.usearch").stat().st_size
    return run


def hnswlib_run(data, queries, folder):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=M, ef_construction=EF_ADD)
    index.set_num_threads(THREADS)
    t0 = time.perf_counter()
    index.add_items(data, np.arange(len(data)))
    build = time.perf_counter() - t0
    index.set_ef(EF_SEARCH)
    index.save_index(str(folder / "h.bin"))
    return build, lambda q: index.knn_query(q, k=K)[0][0].astype(np.int64), (folder / "h.bin").stat().st_size


def faiss_run(data, queries, folder):
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = EF_ADD, EF_SEARCH
    t0 = time.perf_counter()
    index.add(data)
    build = time.perf_counter() - t0
    faiss.write_index(index, str(folder / "f.index"))
    return build, lambda q: index.search(q[None], K)[1][0].astype(np.int64), (folder / "f.index").stat().st_size


VARIANTS = {"usearch f32": usearch_variant("f32"), "usearch i8": usearch_variant("i8"),
            "usearch i8 + rescore 40": usearch_variant("i8", 40), "usearch b1 + rescore 100": usearch_variant("b1", 100),
            "hnswlib f32": hnswlib_run, "faiss HNSWFlat f32": faiss_run}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--json")
    args = parser.parse_args()
    data, queries = load(args.rows)
    truth = exact(data, queries)
    results = {}
    for name in args.only:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                build, search, size = VARIANTS[name](data, queries, Path(tmp))
            except ImportError as exc:
                print(f"{name}: not installed ({exc})")
                continue
            latencies, hits = [], 0
            for q, want in zip(queries, truth):
                t0 = time.perf_counter()
                got = search(q)
                latencies.append((time.perf_counter() - t0) * 1000)
                hits += len(set(got.tolist()) & set(want.tolist()))
        results[name] = {"build_s": round(build, 1), "recall@10": round(hits / truth.size, 4),
                         "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                         "p95_ms": round(float(np.percentile(latencies, 95)), 2), "file_mb": round(size / 2**20, 1)}
        print(name, results[name], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "results": results}, indent=1))


if __name__ == "__main__":
    main()
