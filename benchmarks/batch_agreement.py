"""Greedy agreement of batched and solo generation on an int8 bundle (not a test).

int8 MatMulNBits results at batch m differ from batch 1 in the last bits, so a greedy
choice between two near-equal logits may flip. For each prompt: the solo greedy tokens,
the batched ones (all prompts together), the first position where they differ, and the
solo top-2 logit gap there (a flip at a wide gap would be a bug, not rounding).

    python benchmarks/batch_agreement.py --prompts 16 --max-tokens 64 --slots 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import edge

TOPICS = ["the sea", "bees", "bicycles", "bread", "rain", "compilers", "tides", "autumn leaves", "fridges", "essays",
          "vaccines", "the moon", "lighthouses", "glass", "thunder", "seeds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(Path.home() / ".cache/edge/bundles/smollm2-135m-instruct-int8"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    lm = edge.load(args.bundle)
    prompts = [lm.encode_prompt(f"Tell me about {TOPICS[i % len(TOPICS)]}.") for i in range(args.prompts)]
    solo = [[c.token for c in lm.stream_ids(p, max_tokens=args.max_tokens, draft="none")] for p in prompts]
    batched = [[] for _ in prompts]
    scheduler = lm.scheduler(args.slots, args.slots * 512)
    for out, ids in zip(batched, prompts):
        scheduler.add(lm.request(ids, lambda c, o=out: o.append(c.token), max_tokens=args.max_tokens))
    scheduler.run()
    same, tokens = 0, 0
    print("| prompt | tokens | identical | first difference | solo top-2 gap there |\n|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(solo, batched)):
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        agree = first if first is not None else min(len(a), len(b))
        same, tokens = same + agree, tokens + len(a)
        gap = ""
        if first is not None:
            logits = lm.decoder.fork().logits(prompts[i] + a[:first])[-1]  # (vocab,) solo, at the flip
            top = np.sort(logits)[-2:]
            gap = f"{top[1] - top[0]:.4f}"
        print(f"| {i} | {len(a)} | {a == b} | {'' if first is None else first} | {gap} |")
    print(f"\ngreedy agreement up to the first difference: {same}/{tokens} tokens ({same / tokens:.1%}); "
          f"identical sequences: {sum(a == b for a, b in zip(solo, batched))}/{len(prompts)}")


if __name__ == "__main__":
    main()
