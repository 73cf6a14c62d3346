"""Embedding benchmark (not a test): sentences per second for short sentences and for
paragraphs, the share of time spent tokenising, load time and peak RSS, for edge int8,
edge fp32 and sentence-transformers (torch fp32) on all-MiniLM-L6-v2, in one run.

Each variant runs in a fresh child process (its own peak RSS and load time); the timed
pass is the median of --runs passes after one warm-up batch.

    python benchmarks/embed.py                     # default int8 bundle, its fp32 sibling, sentence-transformers
    python benchmarks/embed.py --threads 2 --runs 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edge.tools.bench import peak_rss_mb

BATCH = 32
SENTENCES = Path(__file__).resolve().parent.parent / "export" / "data" / "sentences.txt"
WORKLOADS = {"short": 1000, "paragraphs": 200}


def workload(name: str) -> list[str]:
    """1,000 short sentences (~13 tokens), or 200 paragraphs of five to eight of them (~75 tokens),
    from the exporter's sentences (read as a file: the children must not import the exporter)."""
    pool = [line for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
    if name == "short":
        return [pool[i % len(pool)] for i in range(WORKLOADS[name])]
    return [" ".join(pool[(i * 7 + j) % len(pool)] for j in range(5 + i % 4)) for i in range(WORKLOADS[name])]


# --- children: one variant, one workload ---------------------------------------------------


def child_edge(bundle: str, texts: list[str], threads: int, runs: int) -> dict:
    import edge

    started = time.perf_counter()
    model = edge.load(bundle, threads=threads)
    load_s = time.perf_counter() - started
    model.embed(texts[:BATCH], BATCH)  # warm-up
    passes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        encodings = model.tokenize(texts)
        t1 = time.perf_counter()
        model.embed_encodings(encodings, BATCH)
        passes.append((t1 - t0, time.perf_counter() - t0))
    return _figures(load_s, passes, len(texts), sum(len(e.ids) for e in encodings))


def child_sentence_transformers(folder: str, texts: list[str], threads: int, runs: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = SentenceTransformer(folder, device="cpu")
    load_s = time.perf_counter() - started
    model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up
    passes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=BATCH)
        total = time.perf_counter() - t0
        t1 = time.perf_counter()  # tokenising alone, batch by batch as encode does
        for start in range(0, len(texts), BATCH):
            model.tokenize(texts[start : start + BATCH])
        passes.append((time.perf_counter() - t1, total))
    tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"])
    return _figures(load_s, passes, len(texts), tokens)


def _figures(load_s: float, passes: list[tuple[float, float]], n: int, tokens: int) -> dict:
    tokenize_s = statistics.median(p[0] for p in passes)
    total_s = statistics.median(p[1] for p in passes)
    return {"load_s": load_s, "seconds": total_s, "texts_per_s": n / total_s, "tokens": tokens,
            "tokenize_share": tokenize_s / total_s,
            "peak_rss_mb": peak_rss_mb()}


# --- parent: prepare bundles, run every child, print the table -----------------------------


def run_child(variant: str, target: str, load: str, threads: int, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--target", target, "--workload", load,
           "--threads", str(threads), "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_targets() -> dict[str, tuple[str, str]]:
    """label -> (variant, bundle or folder)."""
    from edge.paths import cache_dir
    from export.default import ensure_default_bundle
    from export.fetch import MINILM, fetch
    from export.pipeline import export_model

    fp32 = cache_dir() / "bundles" / "all-minilm-l6-v2-fp32"
    if not fp32.exists():
        export_model(str(fetch(MINILM)), fp32, quantize="none")
    return {"edge int8": ("edge", str(ensure_default_bundle("embeddings"))), "edge fp32": ("edge", str(fp32)),
            "sentence-transformers fp32": ("st", str(fetch(MINILM)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["edge", "st"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = child_edge if args.child == "edge" else child_sentence_transformers
        print(json.dumps(run(args.target, workload(args.workload), args.threads, args.runs)))
        return
    targets = default_targets()
    results = {(label, load): run_child(variant, target, load, args.threads, args.runs)
               for load in WORKLOADS for label, (variant, target) in targets.items()}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"all-MiniLM-L6-v2, batch {BATCH}, {args.threads} threads, median of {args.runs} passes; load average {load}")
    print("| variant | workload | texts/s | tokens | tokenising | load s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for (label, load), r in results.items():
        print(f"| {label} | {WORKLOADS[load]} {load} | {r['texts_per_s']:.0f} | {r['tokens']} | "
              f"{r['tokenize_share']:.1%} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]} / {k[1]}": v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
