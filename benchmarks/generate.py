"""Generation benchmark (not a test): load time, time to first token, prefill and decode
speed, Python overhead per step, peak RSS and size, for several bundles in one run.

Each measurement runs `edge.tools.bench.run` in a fresh child process (so peak RSS and load time
are its own); the bundles alternate, and the table shows medians over --runs.

    python benchmarks/generate.py                      # default int8 bundle + its fp32 sibling
    python benchmarks/generate.py --bundle A --bundle B --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["size_mb", "start_to_ready_s", "ttft_s", "prefill_tok_s_short", "prefill_tok_s_long", "decode_tok_s",
           "decode_tok_s_long_context", "python_overhead", "peak_rss_mb"]


def run_child(bundle: str, threads: int) -> dict:
    code = ("import sys, json, time; started = time.perf_counter(); from edge.tools.bench import run; "
            f"print(json.dumps(run({bundle!r}, {threads}, started)))")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout)
    figures["process_s"] = time.perf_counter() - start
    return figures


def size_mb(bundle: str) -> float:
    return sum(f.stat().st_size for f in Path(bundle).iterdir()) / 1e6


def default_bundles() -> list[str]:
    from edge.paths import cache_dir
    from export.default import ensure_default_bundle

    fp32 = cache_dir() / "bundles" / "smollm2-135m-instruct-fp32"
    if not fp32.exists():
        from export.fetch import SMOLLM2, fetch
        from export.pipeline import export_model

        export_model(str(fetch(SMOLLM2)), fp32, quantize="none")
    return [str(ensure_default_bundle()), str(fp32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", help="bundle folder (repeat to compare)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    bundles = args.bundle or default_bundles()
    runs: dict[str, list[dict]] = {b: [] for b in bundles}
    for _ in range(args.runs):
        for bundle in bundles:  # alternate, so drift hits every variant alike
            runs[bundle].append(run_child(bundle, args.threads))
    table = {b: {k: statistics.median(r[k] for r in rs) for k in rs[0]} | {"size_mb": size_mb(b)}
             for b, rs in runs.items()}
    print(f"medians of {args.runs} runs, {args.threads} threads; prompt lengths: "
          f"{ {Path(b).name: (t['short_prompt'], t['long_prompt'], t['long_context']) for b, t in table.items()} }")
    print("| bundle | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for bundle, row in table.items():
        print(f"| {Path(bundle).name} | " + " | ".join(f"{row[c]:.3g}" for c in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
