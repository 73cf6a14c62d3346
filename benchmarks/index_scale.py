"""Index at scale (not a test): embedding throughput local vs Ray, then open time, search
latency, recall@10 against brute force, size and peak RSS of an index of 100k or 1M chunks.

The corpus is generated (seeded templates, ~15 tokens a chunk) and embedded once with the
real MiniLM int8 bundle; the vectors are cached in pieces of PIECE rows under
$EDGE_HOME/bench/index_scale, so the long embedding can run in short resumable steps:

    python benchmarks/index_scale.py embed --chunks 100000 --seconds 110   # repeat until "complete"
    python benchmarks/index_scale.py throughput --texts 6000               # local, Ray 1 and 2 workers
    python benchmarks/index_scale.py search --chunks 100000                # build, open, search, RSS
    python benchmarks/index_scale.py search --chunks 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIECE = 10_000  # rows per cached piece: ~12 s of embedding on 2 cores
QUERIES = 500
BUNDLE = "all-minilm-l6-v2-int8"
ROOT = Path(__file__).resolve().parent.parent

SUBJECTS = ("the cat", "a dog", "the engineer", "my neighbour", "the old library", "a small robot", "the council",
            "the river", "our team", "the violinist", "a startup", "the hospital", "the farmer", "a student",
            "the museum", "the pilot", "the kernel", "a compiler", "the database", "the bakery", "the storm",
            "the museum guard", "a journalist", "the train", "the garden", "a surgeon", "the market", "the server",
            "the referee", "a tourist", "the printer", "the committee", "the orchestra", "a chemist", "the bridge")
VERBS = ("repaired", "painted", "ignored", "measured", "celebrated", "delayed", "tested", "cleaned", "described",
         "rejected", "translated", "bought", "lost", "found", "moved", "closed", "opened", "studied", "sold",
         "photographed", "rebuilt", "inspected", "watched", "flooded", "upgraded", "cancelled", "approved")
OBJECTS = ("the broken window", "a red bicycle", "the quarterly report", "an old piano", "the network cable",
           "a bowl of soup", "the tax form", "the wooden fence", "a jazz record", "the password policy",
           "a bag of apples", "the solar panels", "the football pitch", "a recipe for bread", "the parking lot",
           "the mountain trail", "a vaccine trial", "the train timetable", "a chess set", "the wedding cake",
           "the memory leak", "a wool sweater", "the election results", "a telescope", "the coffee machine")
PLACES = ("in Paris", "near the harbour", "at the school", "on the roof", "in the basement", "at the airport",
          "in a small village", "downtown", "at the stadium", "in the lab", "by the lake", "in the desert",
          "at the office", "on the ship", "in the forest", "at the station", "in the kitchen", "on Mars")
TIMES = ("yesterday", "last winter", "every Monday", "before dawn", "after the meeting", "in 1999", "twice a year",
         "during the storm", "at midnight", "this morning", "for three hours", "without telling anyone")


def corpus(start: int, stop: int, seed: int = 0) -> list[str]:
    """Chunks start..stop of the generated corpus: the same text for the same rows on every run."""
    texts = []
    for row in range(start, stop):
        rng = np.random.default_rng((seed, row))
        words = [rng.choice(part) for part in (SUBJECTS, VERBS, OBJECTS, PLACES, TIMES)]
        texts.append(f"{words[0].capitalize()} {words[1]} {words[2]} {words[3]} {words[4]}.")
    return texts


def queries() -> list[str]:
    """Held-out queries: another seed, so none is a stored chunk."""
    return corpus(0, QUERIES, seed=1)


def cache_folder() -> Path:
    from edge.paths import cache_dir

    return cache_dir() / "bench" / "index_scale"


def piece_file(start: int) -> Path:
    return cache_folder() / f"vectors-{start:08d}.npy"


# --- step 1: embed once, in resumable pieces ----------------------------------------------------


def embed(chunks: int, seconds: float, threads: int) -> None:
    """Embed missing pieces of the first `chunks` rows until `seconds` have passed."""
    import edge
    from edge.embeddings.index import EMBED_GROUP
    from edge.embeddings.pooling import l2_normalize

    model = edge.load(BUNDLE, threads=threads)
    cache_folder().mkdir(parents=True, exist_ok=True)
    query_file = cache_folder() / "queries.npy"
    if not query_file.exists():
        _save(query_file, l2_normalize(model.embed(queries())))
    started, done = time.perf_counter(), 0
    for start in range(0, chunks, PIECE):
        if piece_file(start).exists():
            continue
        if time.perf_counter() - started > seconds:
            break
        texts = corpus(start, start + PIECE)
        vectors = np.concatenate([model.embed(texts[i : i + EMBED_GROUP]) for i in range(0, PIECE, EMBED_GROUP)])
        _save(piece_file(start), l2_normalize(vectors))
        done += PIECE
    missing = sum(not piece_file(s).exists() for s in range(0, chunks, PIECE))
    rate = done / (time.perf_counter() - started)
    print(f"embedded {done} chunks ({rate:.0f}/s); {'complete' if not missing else f'{missing} pieces missing'}")


def _save(path: Path, array: np.ndarray) -> None:
    """Write then rename: a piece killed half-way is not left looking complete."""
    partial = path.with_suffix(".partial.npy")
    np.save(partial, array.astype(np.float32), allow_pickle=False)
    os.replace(partial, path)


def cached(chunks: int) -> np.ndarray:
    """(chunks, 384) float32 unit rows from the cache; SystemExit naming the step if incomplete."""
    missing = [s for s in range(0, chunks, PIECE) if not piece_file(s).exists()]
    if missing:
        sys.exit(f"the embedding cache lacks {len(missing)} pieces: run `index_scale.py embed --chunks {chunks}`")
    return np.concatenate([np.load(piece_file(s), allow_pickle=False) for s in range(0, chunks, PIECE)])


# --- step 2: embedding throughput, local against Ray ------------------------------------------------


def throughput(count: int, runs: int) -> dict:
    """Chunks/s embedding `count` chunks (groups of EMBED_GROUP, as `edge index` does): here with
    2 threads, and on a local Ray cluster of 2 CPUs with 1 and 2 workers of 1 CPU. Ray's figure
    counts from the first group back (actors up) and, apart, the actors' start."""
    import logging

    import ray

    import edge
    from edge.embeddings.distributed import RayJob
    from edge.embeddings.plan import EMBED_GROUP, embed_group

    texts = corpus(0, count)
    groups = [texts[i : i + EMBED_GROUP] for i in range(0, count, EMBED_GROUP)]
    model = edge.load(BUNDLE, threads=2)
    embed_group(model, groups[0])  # warm-up
    figures = {"local 2 threads": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        for group in groups:
            embed_group(model, group)
        figures["local 2 threads"].append(count / (time.perf_counter() - t0))
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    for workers in (1, 2):
        key = f"Ray {workers} worker{'s' if workers > 1 else ''} x 1 CPU"
        figures[key], figures[key + " (start s)"] = [], []
        for _ in range(runs):
            job = RayJob(True, model, {"tokens": 128, "overlap": 32, "headings": True}, workers, 1)
            t0 = time.perf_counter()
            stream = job.embed(groups)
            first = next(stream)
            t1 = time.perf_counter()
            done = len(first) + sum(len(v) for v in stream)
            assert done == count
            figures[key].append((count - len(first)) / (time.perf_counter() - t1))
            figures[key + " (start s)"].append(t1 - t0)
    ray.shutdown()
    result = {key: round(statistics.median(values), 1) for key, values in figures.items()}
    base = result["local 2 threads"]
    result["ratio 2 workers / local"] = round(result["Ray 2 workers x 1 CPU"] / base, 3)
    result["ratio 2 workers / 1 worker"] = round(result["Ray 2 workers x 1 CPU"] / result["Ray 1 worker x 1 CPU"], 3)
    return result


# --- step 3: build, open and search an index of the cached vectors ---------------------------------


def build(chunks: int, out: Path) -> dict:
    """The index of the cached rows, written by edge's own commit (shards, graph, index.json)."""
    import edge
    from edge.embeddings import index as index_module
    from edge.embeddings.plan import Planned
    from edge.embeddings.shards import Entry

    model = edge.load(BUNDLE, threads=2)
    chunking = {"tokens": 128, "overlap": 32, "headings": True}
    plan = [Planned(f"/corpus/piece-{s:08d}.txt", f"{s:064x}",
                    [Entry(f"/corpus/piece-{s:08d}.txt", r + 1, r + 1, t) for r, t in enumerate(corpus(s, s + PIECE))])
            for s in range(0, chunks, PIECE)]
    fresh = (np.load(piece_file(s), allow_pickle=False) for s in range(0, chunks, PIECE))
    report = index_module.IndexReport()
    started = time.perf_counter()
    with index_module._locked(out):
        index_module._commit(out, plan, None, fresh, None, report, index_module._meta_base(model, chunking, report))
    return {"build s (shards + graph)": round(time.perf_counter() - started, 1)}


def measure(out: Path, chunks: int, threads: int) -> dict:
    """Open time, nearest() latency, recall@10 against brute force over the cache, sizes."""
    from edge.embeddings.index import SearchIndex

    t0 = time.perf_counter()
    index = SearchIndex.open(out, threads=threads)
    opened = time.perf_counter() - t0
    data, queries_ = cached(chunks), np.load(cache_folder() / "queries.npy", allow_pickle=False)
    truth = exact_top10(data, queries_)  # (Q, 10)
    del data
    latencies, hits = [], 0
    for q, want in zip(queries_, truth):
        t0 = time.perf_counter()
        rows, _ = index.nearest(q, 10)
        latencies.append((time.perf_counter() - t0) * 1000)
        hits += len(set(rows.tolist()) & set(want.tolist()))
    sizes = {}
    for file in out.iterdir():
        kind = file.name.split("-")[0].lstrip(".")
        sizes[kind] = sizes.get(kind, 0) + file.stat().st_size
    return {"open s": round(opened, 3), "graph": index.graph is not None,
            "nearest p50 ms": round(float(np.percentile(latencies, 50)), 2),
            "nearest p95 ms": round(float(np.percentile(latencies, 95)), 2),
            "recall@10": round(hits / truth.size, 4),
            "size MB": {k: round(v / 2**20, 1) for k, v in sorted(sizes.items())}}


def exact_top10(data: np.ndarray, queries_: np.ndarray) -> np.ndarray:
    """(Q, 10) rows of the 10 best dot products per query, 50 queries at a time (bounded memory)."""
    out = []
    for lo in range(0, len(queries_), 50):
        scores = queries_[lo : lo + 50] @ data.T  # (50, N)
        top = np.argpartition(-scores, 10, axis=1)[:, :10]  # (50, 10), unordered
        out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1))
    return np.concatenate(out)


# `edge search` in a child that reports its own peak RSS (VmHWM: the high-water mark of the
# memory it has after exec). getrusage(RUSAGE_CHILDREN) is no measure here: a forked child's
# maxrss counts the parent's pages it shared before exec, ~200 MB of cached vectors.
CHILD = """
import atexit, sys
from edge.cli import main
atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))
sys.exit(main(sys.argv[1:]))
"""


def cli_search(out: Path, threads: int) -> dict:
    """`edge search` as a user runs it, in a child: wall time and peak RSS (MB)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "search", str(out), "a dog repaired a bicycle in Paris",
                           "-k", "10", "-t", str(threads)], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = int(done.stderr.rsplit("VmHWM:", 1)[1].split()[0])
    return {"edge search s": round(wall, 2), "edge search peak RSS MB": round(peak_kb / 1024)}


def cpu() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "?")
    flags = text.split("Flags:", 1)[-1]
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {simd}, {os.cpu_count()} CPUs, {platform.machine()}"


def search_step(chunks: int, threads: int, keep: Path | None, min_rows: int | None) -> dict:
    """`min_rows`: the graph threshold for this run (ann.MIN_ROWS otherwise), for a smaller corpus."""
    if min_rows is not None:
        from edge.embeddings import ann

        ann.MIN_ROWS = min_rows
    folder = keep or Path(tempfile.mkdtemp(prefix="index-scale-"))
    out = folder / f"index-{chunks}"
    result = {"chunks": chunks, "cpu": cpu()}
    if not (out / "index.json").exists():
        result.update(build(chunks, out))
    result.update(measure(out, chunks, threads))
    result.update(cli_search(out, threads))
    if chunks <= 200_000:
        from edge.embeddings.index import SearchIndex

        index, q = SearchIndex.open(out, exact=True), np.load(cache_folder() / "queries.npy")[:100]
        latencies = []
        for vector in q:
            t0 = time.perf_counter()
            index.nearest(vector, 10)
            latencies.append((time.perf_counter() - t0) * 1000)
        result["brute force p50/p95 ms"] = [round(float(np.percentile(latencies, p)), 1) for p in (50, 95)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    step = sub.add_parser("embed", help="embed missing cache pieces for a while")
    step.add_argument("--chunks", type=int, default=100_000)
    step.add_argument("--seconds", type=float, default=110)
    step.add_argument("--threads", type=int, default=2)
    step = sub.add_parser("throughput", help="chunks/s here and on Ray with 1 and 2 workers")
    step.add_argument("--texts", type=int, default=6000)
    step.add_argument("--runs", type=int, default=1)
    step = sub.add_parser("search", help="build an index of the cache, then open, search, recall, RSS")
    step.add_argument("--chunks", type=int, default=100_000)
    step.add_argument("--threads", type=int, default=2)
    step.add_argument("--keep", type=Path, help="folder for the index (kept, reused on the next run)")
    step.add_argument("--min-rows", type=int, help="build the graph from this many rows (default: edge's threshold)")
    for step in sub.choices.values():
        step.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.step == "embed":
        embed(args.chunks, args.seconds, args.threads)
        return
    result = throughput(args.texts, args.runs) if args.step == "throughput" else \
        search_step(args.chunks, args.threads, args.keep, args.min_rows)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
