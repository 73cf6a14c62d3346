"""`edge generate --batch` against the same prompts run one by one (issue 15; not a test).

Three ways through the same N chat prompts (greedy, `--max-tokens` each, 2 threads):
- batch: one `edge generate --batch prompts.jsonl -o out.jsonl --parallel P` process;
- one by one in a process: the same command with `--parallel 1` (the model loaded once);
- one by one as commands: `edge generate PROMPT` once per prompt (what a shell loop does:
  every run loads the model), over the first `--sequential` prompts (its figures per prompt
  come from those).
Prints seconds per prompt and generated tokens/s for each, and the ratios, with the CPU
model and load. On an int8 bundle batched and solo replies can part at a near-tie and end
at different lengths, so the token counts differ a little: compare tok/s as well.

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


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-int8")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=16, choices=range(1, 1025), metavar="N",
                        help="prompts run as separate commands")
    args = parser.parse_args()
    common = ["-m", args.model, "-n", str(args.max_tokens), "--temp", "0", "-t", "2"]
    print(f"CPU: {machine()}")
    runs: dict[str, tuple[float, int, int]] = {}  # how -> (seconds, tokens, prompts)
    with tempfile.TemporaryDirectory() as scratch:
        lines = Path(scratch, "prompts.jsonl")
        lines.write_text("".join(json.dumps({"prompt": prompt(i)}) + "\n" for i in range(args.prompts)))
        for i, (label, parallel) in enumerate((("batch", args.parallel), ("one by one, one process", 1))):
            out = Path(scratch, f"out-{i}.jsonl")  # a fresh file: --batch -o resumes an existing one
            seconds, _ = timed(EDGE + ["generate", "--batch", str(lines), "-o", str(out), "--parallel", str(parallel)]
                               + common)
            records = [json.loads(line) for line in out.read_text().splitlines()]
            runs[label] = (seconds, sum(r["usage"]["completion_tokens"] for r in records), len(records))
        seconds = tokens = 0
        for i in range(args.sequential):
            took, out = timed(EDGE + ["generate", prompt(i), "--json"] + common)
            seconds, tokens = seconds + took, tokens + json.loads(out)["completion_tokens"]
        runs["one by one, a command each"] = (seconds, tokens, args.sequential)
    print(f"\n{args.prompts} prompts ({args.sequential} as commands), {args.max_tokens} new tokens at most, greedy, "
          f"--parallel {args.parallel}\n")
    print("| how | s per prompt | tokens | tok/s | batch's speed-up (s per prompt) |")
    print("|---|---|---|---|---|")
    batch_per_prompt = runs["batch"][0] / runs["batch"][2]
    for label, (took, tokens, prompts) in runs.items():
        print(f"| {label} | {took / prompts:.3f} | {tokens} | {tokens / took:.1f} | "
              f"{took / prompts / batch_per_prompt:.2f}x |")


if __name__ == "__main__":
    main()
