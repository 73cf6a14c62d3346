"""speculative.py's checks of edge alone, in one process on the int8 bundle:

- `agreement`: greedy ids with drafts against without, over the task suite; at every flip
  (first differing position) the no-draft run's top-2 logit gap there, teacher-forced
  through DecoderRunner, and the gaps both runs saw while generating;
- `costs`: one decoder call with n = 1..9 new tokens after a few hundred tokens of context,
  relative to n = 1 (the shape of a COSTS row in edge/generation/drafts.py);
- `profile`: time outside onnxruntime's run during generation, per token and as a share;
- `bound`: the most any draft copied from the context could gain on this CPU: over edge's
  own greedy output (EOS masked, no drafts), a clairvoyant drafter that at every position
  knows the longest run of the coming tokens found anywhere earlier in prompt + output, and
  the draft length that minimises the total cost (dynamic programming over the positions,
  costs: `call_costs`, this CPU's COSTS row). Real drafters guess the run and its length, so
  they get less.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from edge.generation.sampler import Greedy

MAX_RESYNCS = 20  # flips followed per task before giving up on it
COST_CALLS = 200  # timed calls per n
COST_NEW = 9  # n = 1..COST_NEW


def top2_gap(logits: np.ndarray) -> tuple[float, int, int]:
    """(top-1 minus top-2 logit, top-1 id, top-2 id). logits: (vocab,)"""
    top = np.argpartition(logits, -2)[-2:]
    second, first = top[np.argsort(logits[top])]
    return float(logits[first] - logits[second]), int(first), int(second)


class RecordingGreedy(Greedy):
    """edge's greedy sampler (so generation treats it as greedy: near-ties in checked rows
    are rechecked) that keeps the top-2 gap of the row each output position was decided by:
    a checked row's pick that a one-token step redoes (a near-tie) is replaced by the step's."""

    def __init__(self):
        super().__init__()
        self._at: dict[int, float] = {}  # position (ids before it) -> gap

    def __call__(self, logits: np.ndarray, previous_ids) -> int:
        return self.pick(logits, previous_ids)[0]

    def pick(self, logits: np.ndarray, previous_ids) -> tuple[int, float]:
        best, gap = super().pick(logits, previous_ids)
        self._at[len(previous_ids)] = gap
        return best, gap

    @property
    def gaps(self) -> list[float]:
        return [self._at[position] for position in sorted(self._at)]


def greedy(model, ids: list[int], max_tokens: int, draft: str, sampler=None) -> tuple[list[int], list[float]]:
    """The ids, and the top-2 gap at each (empty when given edge's own `sampler`)."""
    from edge.generation.generate import generate_tokens

    recorder = RecordingGreedy()
    out = list(generate_tokens(model.decoder, ids, sampler or recorder, max_tokens, draft=draft))
    return out, recorder.gaps


def agreement(args) -> None:
    """Per task: both runs from the prompt; at the first flip the no-draft token is taken and
    both runs start again from prompt + the agreed ids (prefilled), so every position is
    compared under the same history, and one near-tie does not end the comparison."""
    import edge
    from speculative import load_suite

    model = edge.load(args.bundle, threads=args.threads)
    suite = load_suite(model, args.tasks, args.max_tokens)
    total = same = first_run_same = 0
    flips = []
    print("\n| task | tokens | identical prefix | positions agreeing (re-synced) | flips |")
    print("|---|---|---|---|---|")
    for task in suite["tasks"]:
        prompt, n = task["ids"], task["max_tokens"]
        agreed, task_flips, prefix = [], [], None
        while len(agreed) < n and len(task_flips) <= MAX_RESYNCS:
            reference, reference_gaps = greedy(model, prompt + agreed, n - len(agreed), "none")
            drafted, drafted_gaps = greedy(model, prompt + agreed, n - len(agreed), "lookup")
            flip = _first_difference(drafted, reference)
            if prefix is None:
                prefix = n if flip is None else flip
            if flip is None:
                break
            gap, first, second = _teacher_forced(model, prompt + agreed + reference[:flip])
            task_flips.append({"task": task["name"], "position": len(agreed) + flip, "gap_teacher_forced": gap,
                               "gap_no_draft_run": reference_gaps[flip], "gap_draft_run": drafted_gaps[flip],
                               "no_draft": reference[flip], "draft": drafted[flip], "top2": (first, second)})
            agreed += reference[: flip + 1]  # the no-draft token, then on
        total += n
        same += n - len(task_flips)
        first_run_same += prefix
        flips += task_flips
        print(f"| {task['name']} | {n} | {prefix} | {n - len(task_flips)} | {len(task_flips)} |")
    print(f"\nagreement: {same / total:.2%} of positions ({same}/{total}), each compared with the same history; "
          f"identical output prefix {first_run_same / total:.2%} of tokens")
    print("\n| task | position | top-2 gap, teacher-forced | gap seen without drafts | gap seen with drafts | "
          "no-draft id | draft id | top-2 ids (teacher-forced) |")
    print("|---|---|---|---|---|---|---|---|")
    for f in flips:
        print(f"| {f['task']} | {f['position']} | {f['gap_teacher_forced']:.4f} | {f['gap_no_draft_run']:.4f} | "
              f"{f['gap_draft_run']:.4f} | {f['no_draft']} | {f['draft']} | {f['top2'][0]}, {f['top2'][1]} |")
    if flips:
        gaps = sorted(f["gap_no_draft_run"] for f in flips)
        print(f"\nflip gaps (no-draft run): median {statistics.median(gaps):.4f}, max {gaps[-1]:.4f}")


def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def _teacher_forced(model, ids: list[int]) -> tuple[float, int, int]:
    """Top-2 gap of the logits after `ids`, prefilled from an empty cache."""
    model.decoder.reset()
    gap = top2_gap(model.decoder.prefill(ids))
    model.decoder.reset()
    return gap


def costs(args) -> None:
    """Median time of one call appending n tokens to the same cached context, rewound between
    calls; n shuffled within every round so drift hits them alike. Printed like a drafts.COSTS row."""
    import edge
    from speculative import load_suite

    model = edge.load(args.bundle, threads=args.threads)
    decoder = model.decoder
    suite = load_suite(model, args.tasks)
    context = max((t["ids"] for t in suite["tasks"]), key=len)
    decoder.reset()
    decoder.reserve(len(context) + COST_NEW)
    decoder.prefill(context)
    base, new = decoder.cache_length, context[-COST_NEW:]
    times: dict[int, list[float]] = {n: [] for n in range(1, COST_NEW + 1)}
    order = list(times)
    for n in order * 5:  # warm every shape
        decoder.logits(new[:n])
        decoder.rewind_to(base)
    rng = random.Random(0)
    for _ in range(COST_CALLS):
        rng.shuffle(order)
        for n in order:
            start = time.perf_counter()
            decoder.logits(new[:n])
            times[n].append(time.perf_counter() - start)
            decoder.rewind_to(base)
    medians = {n: statistics.median(t) for n, t in times.items()}
    print(f"\ncontext {base} tokens, {COST_CALLS} calls per n (median), {args.threads} threads")
    print("| n | median ms | relative to n = 1 | per token |")
    print("|---|---|---|---|")
    for n, m in medians.items():
        print(f"| {n} | {m * 1e3:.2f} | {m / medians[1]:.2f} | {m / medians[1] / n:.2f} |")
    print("\ncosts row = (" + ", ".join(f"{medians[n] / medians[1]:.2f}" for n in medians) + ")")


def bound(args) -> None:
    import edge
    from edge.generation.drafts import MAX_DRAFT, call_costs
    from edge.generation.generate import generate_tokens
    from speculative import load_suite
    from speculative_runtimes import greedy_without_eos

    model = edge.load(args.bundle, threads=args.threads)
    suite = load_suite(model, args.tasks, args.max_tokens)
    costs = call_costs(model.decoder.quantization)
    print(f"\ncosts row {costs}")
    print("| task | group | tokens | clairvoyant copy: speed-up over one-token steps |")
    print("|---|---|---|---|")
    groups: dict[str, list[float]] = {}
    for task in suite["tasks"]:
        prompt = task["ids"]
        out = list(generate_tokens(model.decoder, prompt, greedy_without_eos(suite["eos"]), task["max_tokens"],
                                   draft="none"))
        n = len(out)
        speedup = n / copy_ceiling_cost(prompt, out, costs, MAX_DRAFT)
        groups.setdefault(task["group"], []).append(speedup)
        print(f"| {task['name']} | {task['group']} | {n} | {speedup:.2f}x |")
    for group, values in groups.items():
        print(f"\n{group}: mean {statistics.mean(values):.2f}x")


def copy_ceiling_cost(prompt: list[int], out: list[int], costs, max_draft: int) -> float:
    """The least decoder cost, in one-token steps, of generating `out` after `prompt` by
    checking drafts copied from the text so far, for a drafter that knows at every position
    the longest run of the coming tokens found earlier and the best length to check (dynamic
    programming over the `costs` row). len(out) / this is the most any copy-from-context
    drafter can gain over one-token steps. Example: out copying nothing -> len(out)."""
    n = len(out)
    if n == 0:
        return 0.0
    # run[p]: how many of out[p:p + max_draft] occur in a row somewhere in prompt + out[:p]
    run = [_longest_copy(prompt + out[:p], out[p : p + max_draft]) for p in range(n)]
    cost = [0.0] * (n + 1)  # cost[p]: least cost to produce out[p:], the token before p known
    for p in range(n - 1, 0, -1):
        cost[p] = min(costs[k] + cost[min(n, p + k + 1)] for k in range(min(run[p], n - p - 1) + 1))
    return 1 + cost[1]  # the first token comes from the prompt's call


def _longest_copy(context: list[int], coming: list[int]) -> int:
    """The longest prefix of `coming` found as a run anywhere in `context`."""
    best = 0
    for start, token in enumerate(context):
        if coming and token == coming[0]:
            n = 1
            while n < len(coming) and start + n < len(context) and context[start + n] == coming[n]:
                n += 1
            best = max(best, n)
    return best


def profile(args) -> None:
    """Wall time of generate_tokens over the suite against the time inside session.run_bound
    (as edge.tools.bench._decode wraps it): the rest is Python (sampler, drafter, cache
    bookkeeping, the generator itself)."""
    import edge
    from edge.generation.sampler import SamplingParams, make_sampler
    from speculative import load_suite

    model = edge.load(args.bundle, threads=args.threads)
    suite = load_suite(model, args.tasks, args.max_tokens)
    argmax = make_sampler(SamplingParams())
    session, inside = model.decoder.session, [0.0]
    run_bound = session.run_bound

    def timed(io):
        start = time.perf_counter()
        result = run_bound(io)
        inside[0] += time.perf_counter() - start
        return result

    greedy(model, suite["warmup"], 48, "lookup", argmax)
    print("\n| draft | group | tokens | wall s | onnxruntime s | Python s | Python per token us | Python share |")
    print("|---|---|---|---|---|---|---|---|")
    session.run_bound = timed
    try:
        for draft in ("lookup", "none"):
            for group in ("grounded", "open-ended"):
                inside[0], wall, tokens = 0.0, 0.0, 0
                for task in (t for t in suite["tasks"] if t["group"] == group):
                    start = time.perf_counter()
                    tokens += len(greedy(model, task["ids"], task["max_tokens"], draft, argmax)[0])
                    wall += time.perf_counter() - start
                python = wall - inside[0]
                print(f"| {draft} | {group} | {tokens} | {wall:.2f} | {inside[0]:.2f} | {python:.2f} | "
                      f"{python / tokens * 1e6:.0f} | {python / wall:.1%} |")
    finally:
        del session.run_bound  # back to the class's method
    print("\n(each task's prefill is included in both wall and onnxruntime time; edge's greedy sampler)")
