"""Decode throughput that survives a busy machine: tokens per CPU-second with one thread.

Wall-clock tokens/s moves 2x between runs when other jobs share the cores; with one
onnxruntime thread (no pool spinning) CPU time counts the work, not the waiting. Each
measurement is a fresh process: load, a 40-token prompt, 3 x 64 greedy decode steps
(median); bundles alternate round by round. `genai:PATH` runs an onnxruntime-genai model
with --genai-python (its own venv: this file needs only the stdlib and numpy there).

    python benchmarks/decode_cpu.py --rounds 4 /tmp/qv/int8-b32 /tmp/qv/int4-min-head8 \\
        genai:/path/to/genai-int4 --genai-python /work/.peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

STEPS, REPEATS = 64, 3


def _edge(path: str, ids: list[int]):
    import edge

    decoder = edge.load(path, threads=1).decoder

    def run() -> float:
        decoder.reset()
        token = int(decoder.prefill(ids).argmax())
        start = time.process_time()
        for _ in range(STEPS):
            token = int(decoder.decode_step(token).argmax())
        return time.process_time() - start

    return run


def _genai(path: str, ids: list[int]):
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(path)
    options = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)

    def run() -> float:
        params = og.GeneratorParams(model)
        total = len(ids) + STEPS + 1
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        generator.generate_next_token()  # the prompt's token
        start = time.process_time()
        for _ in range(STEPS):
            generator.generate_next_token()
        return time.process_time() - start

    return run


def child(kind: str, path: str, ids: list[int]) -> float:
    """Median tokens per CPU-second of the decode steps (the prompt not counted)."""
    run = (_edge if kind == "edge" else _genai)(path, ids)
    run()  # warm-up
    return statistics.median(STEPS / run() for _ in range(REPEATS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", help="edge bundle folders, or genai:MODEL_FOLDER")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--genai-python", default=sys.executable)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child[0], args.child[1], json.loads(args.child[2])))
        return
    import edge

    text = "The lighthouse keeper wrote about ships, storms and the price of flour in the village. " * 4
    ids = edge.load(next(b for b in args.bundles if not b.startswith("genai:"))).tokenizer.encode(text)[:40]
    rates: dict[str, list[float]] = {b: [] for b in args.bundles}
    for _ in range(args.rounds):
        for bundle in args.bundles:  # alternate, so drift hits every variant alike
            kind, path = ("genai", bundle[6:]) if bundle.startswith("genai:") else ("edge", bundle)
            python = args.genai_python if kind == "genai" else sys.executable
            out = subprocess.run([python, __file__, "--child", kind, path, json.dumps(ids)],
                                 capture_output=True, text=True, check=True)
            rates[bundle].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"tokens per CPU-second, 1 thread, {STEPS} decode steps after {len(ids)} prompt tokens, "
          f"{args.rounds} rounds: median (min-max)")
    for bundle, values in rates.items():
        print(f"| {bundle} | {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) |")


if __name__ == "__main__":
    main()
