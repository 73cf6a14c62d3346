"""`edge generate --batch` against the same prompts run one by one (issue 15; not a test).

Three ways through the same N chat prompts (greedy, `--max-tokens` each, 2 threads):
- batch: one `edge generate --batch prompts.jsonl -o out.jsonl --parallel P` process;
- one by one in a process: the same command with `--parallel 1` (the model loaded once);
- one by one as commands: `edge generate PROMPT` once per prompt (what a shell loop does:
  every run loads the model), over the first `--sequential` prompts, scaled to N.
Prints seconds per prompt for each and the ratios, with the CPU model and load.

    python benchmarks/generate_batch.py --prompts 64 --max-tokens 64 --parallel 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import TOPICS  # noqa: E402
from speculative import machine  # noqa: E402

EDGE = [sys.executable, "-m", "edge"]


def prompt(i: int) -> str:
    return f"In three sentences, explain {TOPICS[i % len(TOPICS)]} to a curious child. (Question {i}.)"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-int8")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=16, help="prompts run as separate commands (scaled)")
    args = parser.parse_args()
    common = ["-m", args.model, "-n", str(args.max_tokens), "--temp", "0", "-t", "2"]
    print(f"CPU: {machine()}")
    with tempfile.TemporaryDirectory() as scratch:
        lines = Path(scratch, "prompts.jsonl")
        lines.write_text("".join(json.dumps({"prompt": prompt(i)}) + "\n" for i in range(args.prompts)))
        seconds = {}
        for label, parallel in (("batch", args.parallel), ("one by one, one process", 1)):
            out = Path(scratch, f"out-{parallel}.jsonl")
            seconds[label] = timed(EDGE + ["generate", "--batch", str(lines), "-o", str(out), "--parallel",
                                           str(parallel)] + common)
            tokens = sum(json.loads(line).get("usage", {}).get("completion_tokens", 0)
                         for line in out.read_text().splitlines())
            print(f"{label}: {seconds[label]:.1f} s, {tokens} tokens")
        runs = [timed(EDGE + ["generate", prompt(i)] + common) for i in range(args.sequential)]
        seconds["one by one, a command each"] = sum(runs) / len(runs) * args.prompts
    print(f"\n{args.prompts} prompts, {args.max_tokens} new tokens at most, greedy, --parallel {args.parallel}\n")
    print("| how | s per prompt | batch's speed-up |")
    print("|---|---|---|")
    for label, total in seconds.items():
        print(f"| {label} | {total / args.prompts:.3f} | {total / seconds['batch']:.2f}x |")


if __name__ == "__main__":
    main()
