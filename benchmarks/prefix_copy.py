"""Time a burst of chat requests through one scheduler, with and without copying shared prompt rows.

Issue 15; not a test. serve_load.py's first `--requests` chat prompts (even ones carry its
system prompt, odd ones SmolLM2's default one) are added to one scheduler at once, after
one untimed burst, then `--rounds` times each way, alternating: with the copy between batch
slots (what `edge serve` does) and with it switched off (`Scheduler.copy_prefixes`). Prints
the prompt tokens actually prefilled and when the last request got its first token, with
the CPU model and load. In-process, so it times the scheduler, not HTTP.

    python benchmarks/prefix_copy.py --requests 8 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import question  # noqa: E402
from speculative import machine  # noqa: E402

BUNDLES = Path.home() / ".cache/edge/bundles"


def burst(model, prompts: list[list[int]], copy: bool, max_tokens: int) -> tuple[int, float]:
    """(prompt tokens prefilled, seconds until every request had its first token)."""
    scheduler = model.scheduler(slots=len(prompts), kv_tokens=len(prompts) * 512)
    scheduler.copy_prefixes = copy
    prefilled, prefill = [0], scheduler.runner.prefill

    def counted(slot, ids):
        prefilled[0] += len(ids)
        return prefill(slot, ids)

    scheduler.runner.prefill = counted
    firsts: dict[int, float] = {}
    start = time.perf_counter()
    for i, ids in enumerate(prompts):
        sink = (lambda i: lambda chunk: firsts.setdefault(i, time.perf_counter() - start))(i)
        scheduler.add(model.request(ids, sink, max_tokens=max_tokens))
    scheduler.run()
    return prefilled[0], max(firsts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLES / "smollm2-135m-instruct-int8")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 2:
        parser.error("--rounds must be at least 1 and --requests at least 2")
    import edge

    model = edge.load(str(args.bundle), threads=args.threads)
    prompts = [model.encode_chat(question(i)) for i in range(args.requests)]
    figures: dict[bool, list[tuple[int, float]]] = {True: [], False: []}
    burst(model, prompts, True, args.max_tokens)  # untimed: first-call costs of every block shape
    for _ in range(args.rounds):
        for copy in (True, False):
            figures[copy].append(burst(model, prompts, copy, args.max_tokens))
    print(f"{machine()}; {args.requests} chat prompts of {min(map(len, prompts))}-{max(map(len, prompts))} "
          f"tokens at once, {args.rounds} alternating rounds (medians)\n")
    print("| prompt rows | tokens prefilled | last first token (s) |\n|---|---|---|")
    for copy, label in ((True, "copied between slots"), (False, "each prompt read whole")):
        runs = figures[copy]
        counts = sorted({tokens for tokens, _ in runs})  # the same every round: the plan does not depend on timing
        print(f"| {label} | {', '.join(map(str, counts))} | {statistics.median(t for _, t in runs):.2f} |")
    ratio = statistics.median(t for _, t in figures[True]) / statistics.median(t for _, t in figures[False])
    print(f"\ncopied / read whole, time to the last first token: {ratio:.2f}x")


if __name__ == "__main__":
    main()
