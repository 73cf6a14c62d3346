"""Drafts for speculative decoding: token ids seen so far in, a guess at the next few out.

A decode step reads every weight once for one token; a call checking k drafted tokens
reads them once for k + 1 positions and costs far less than k + 1 steps (COSTS below). So
when the text repeats itself (quoting the prompt, code, lists, earlier chat turns), guessing
the continuation from the sequence itself and checking the guess in one call is faster.

`NgramDrafter`: prompt lookup. The most recent earlier occurrence of the last n tokens (n
from MAX_NGRAM down to 1) proposes the tokens that followed it. An index from each n-gram
to the position after its latest occurrence is updated as tokens arrive (n dictionary
writes per token), so a proposal costs microseconds, not a scan of the context.

`Drafts`: one sequence's drafting from call to call (what to check next, learnt from how
the last proposal fared); `generate_tokens` and the batching scheduler (for a sequence
decoding alone) both draft through one.

`DraftLength`: how many tokens to draft, chosen to maximise the expected tokens per unit of
cost. It keeps a running estimate of how often a drafted token is accepted, learnt from
every step: verified drafts, and also, for free, the steps run without one (was the
proposal's first token the one sampled?). So drafting stops where guesses fail (open-ended
text pays for nothing) and resumes as soon as they start to hold again. Greedy decoding of a
quantized bundle also redoes a checked row that is a near-tie with a one-token step
(RECHECK_MARGIN), which costs the rest of that call and one more; estimates of how often a
call's first row and its later rows are near-ties (learnt from the top-2 gaps of the greedy
rows a sequence drafting alone samples) enter the expected cost too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge.generation.sampler import Greedy

MAX_NGRAM = 4  # longest n-gram looked up; shorter ones are tried when it is not found
MIN_NGRAM = 1
MAX_DRAFT = 8  # longest draft checked in one call

# The cost of one decoder call with n new tokens, relative to one token (index n - 1), at
# batch 1 with a few hundred tokens of context: SmolLM2-135M int8, 2 threads, measured with
# benchmarks/speculative.py --costs on each CPU named. Weights are read once per call, so the
# extra positions cost only their arithmetic, and how much that is depends on the CPU's int8
# instructions: with VNNI an extra position costs ~0.1 of a step, with AVX2 alone ~0.3, which
# makes long drafts a loss there unless nearly every drafted token is kept.
# An fp32 bundle reads 4x the weight bytes per call in float GEMMs, so its extra positions
# are cheap on any CPU (measured on the Zen 3, with a test run beside it).
COSTS = {
    "AVX-512 VNNI (Zen 5)": (1.00, 1.14, 1.25, 1.34, 1.47, 1.56, 1.66, 1.75, 1.87),
    "AVX2 (Zen 3)": (1.00, 1.21, 1.56, 1.85, 2.22, 2.52, 2.91, 3.20, 3.56),
    "fp32 (Zen 3)": (1.00, 1.15, 1.23, 1.28, 1.30, 1.33, 1.65, 1.69, 1.72),
}


def call_costs(quantization: str) -> tuple[float, ...]:
    """The COSTS row for a bundle of this quantization ("none" is fp32) on this CPU: fp32's
    row for fp32 bundles, the VNNI row for quantized ones on x86 with VNNI, the AVX2 row for
    every other quantized case. Arm is not measured: the costlier row drafts less, and
    drafting too little loses less than drafting too much (text that repeats nothing would
    run slower than plain steps)."""
    from edge.cpu import host_cpu, int8_support  # reads /proc/cpuinfo once per process

    if quantization == "none":
        return COSTS["fp32 (Zen 3)"]
    cpu = host_cpu()
    support = int8_support(cpu) if cpu is not None else None
    vnni = support is not None and support.kernel in ("AVX-512 VNNI", "AVX-VNNI")
    return COSTS["AVX-512 VNNI (Zen 5)" if vnni else "AVX2 (Zen 3)"]


# A checked call's rows come from other kernels than a one-token step's: onnxruntime's CPU
# attention multiplies with MLAS SGEMM, whose one-row kernel (a step) sums in another order
# than its blocked kernel (several rows), and int8 activations can turn that last-bit
# difference into a different int8 code, up to a few tenths of a logit at the last layer
# (benchmarks/speculative.py --agreement). So on a quantized bundle a greedy position whose
# top-2 gap in a checked row is under RECHECK_MARGIN is decided again by a one-token step,
# as it is without drafts. Measured on the suite (benchmarks/README.md): flips 50 -> 29 of
# 2,688 positions at 1.0 (drafted speed on `edge bench`'s quote ~0.9x of no recheck); 0.5
# let more through (a checked row can be off by more than the teacher-forced gaps suggest).
# The flips left come from the cache: rows kept from checked calls hold those last bits.
RECHECK_MARGIN = 1.0


def recheck_margin(sampler, quantization: str) -> float:
    """The top-2 gap under which a checked row's greedy pick is redone by a one-token step:
    RECHECK_MARGIN for a greedy sampler on a quantized bundle, else 0 (never). fp32 kernels
    differ in the last bits only; sampled draws are not rechecked."""
    return RECHECK_MARGIN if isinstance(sampler, Greedy) and quantization != "none" else 0.0


class NgramDrafter:
    """Proposes continuations of `ids` found earlier in `ids`.

    Example: ids [5, 6, 7, 8, 5, 6] -> propose(3) == [7, 8, 5] (after the earlier "5 6")
    """

    def __init__(self, ids: Sequence[int] = ()):
        self.ids: list[int] = []
        self._after: list[dict[tuple[int, ...], int]] = [{} for _ in range(MAX_NGRAM + 1)]  # [n]: gram -> next position
        self.extend(ids)

    def extend(self, ids: Sequence[int]) -> None:
        for token in ids:
            self.append(token)

    def append(self, token: int) -> None:
        """Index the n-grams that end just before `token`: their continuation is now known."""
        ids, end = self.ids, len(self.ids)
        for n in range(MIN_NGRAM, min(MAX_NGRAM, end) + 1):
            self._after[n][tuple(ids[end - n : end])] = end
        ids.append(token)

    def truncate(self, length: int) -> None:
        """Forget the ids from `length` on (a rewound conversation): rebuilt, as it is rare."""
        if length < len(self.ids):
            kept = self.ids[:length]
            self.__init__(kept)

    def propose(self, k: int) -> tuple[list[int], int]:
        """Up to k ids that followed the latest earlier occurrence of the longest matching
        suffix, and that suffix's length n (0 and [] when nothing matches)."""
        ids = self.ids
        for n in range(min(MAX_NGRAM, len(ids)), MIN_NGRAM - 1, -1):
            start = self._after[n].get(tuple(ids[len(ids) - n :]))
            if start is not None:
                return ids[start : start + k], n
        return [], 0


class DraftLength:
    """How many drafted tokens to check next, from running estimates of acceptance and of
    near-ties.

    With acceptance probability a per drafted token (each accepted only if the ones before
    it were), a draft of k yields 1 + a + ... + a^k tokens for costs[k] (a row of COSTS,
    `call_costs`); k = 0 is one plain step. Greedy decoding of a quantized bundle also redoes
    a checked row that is a near-tie by a one-token step (generate.py), which gives that
    row's token, loses the call's later rows and costs one step more: with a chance q0 that
    a call's first row is a near-tie and q1 that a later one is (rows reached through kept
    drafts are surer, so they get their own estimate), row 1 is reached with probability
    (1 - q0) a and each row after it with (1 - q1) a more; every reached row yields one token,
    and the redos add q0 + q1 (reach_1 + ... + reach_k) to the cost. The acceptance is kept
    per matched n-gram length (a 4-gram match is a surer guess than a 1-gram one), the
    near-tie chances per sequence (0 where nothing is rechecked).
    Example: a = 0.9 on the AVX2 row drafts 3 tokens at q0 = 0.2, q1 = 0.05 and none at q0 = q1 = 0.3.
    """

    RATE = 0.15  # weight of the newest observation in the running estimates
    PRIOR = 0.5

    def __init__(self, costs: Sequence[float], limit: int = MAX_DRAFT):
        self.costs = tuple(costs)
        self.limit = min(limit, len(self.costs) - 1)
        self.accept = [self.PRIOR] * (MAX_NGRAM + 1)  # [n]: chance a drafted token is accepted
        self.tie_chances = [0.0, 0.0]  # that a call's first row / a later row is a near-tie, redone

    def choose(self, ngram: int, available: int) -> int:
        """The draft length with the most tokens per cost (0: run a plain step)."""
        a, (q0, q1), costs = self.accept[ngram], self.tie_chances, self.costs
        best, best_k, tokens, redos, reach = 1.0, 0, 1.0, q0, (1.0 - q0) * a
        for k in range(1, min(self.limit, available) + 1):
            tokens, redos = tokens + reach, redos + q1 * reach
            value = tokens / (costs[k] + redos)
            if value > best:
                best, best_k = value, k
            reach *= (1.0 - q1) * a
        return best_k

    def observe(self, ngram: int, accepted: int, checked: int) -> None:
        """`checked` drafted tokens were compared in order; the first `accepted` matched."""
        rate, a = self.RATE, self.accept[ngram]
        for i in range(checked):
            a += rate * ((1.0 if i < accepted else 0.0) - a)
        self.accept[ngram] = a

    def observe_row(self, near_tie: bool, later: bool) -> None:
        """A greedy row was (or was not) within the recheck margin; `later`: a checked call's
        row after its first (reached through kept drafts)."""
        self.tie_chances[later] += self.RATE * (float(near_tie) - self.tie_chances[later])


class Drafts:
    """One sequence's drafts across decoder calls: a constraint's forced tokens, else a
    prompt-lookup draft of the length that pays, with the length learnt from what was
    sampled after the previous proposal (however many calls ago).

    Example: drafts = Drafts(prompt_ids, call_costs("int8"))
             drafted = drafts.next(ids, room)  # check [ids[-1], *drafted]
    """

    def __init__(self, ids: Sequence[int], costs: Sequence[float], lookup: bool = True):
        self.drafter = NgramDrafter(ids) if lookup else None
        self.lengths = DraftLength(costs)
        self._drafted: list[int] = []  # the last proposal
        self._ngram, self._guess, self._looked_up = 0, None, False
        self._at = len(ids)  # len(ids) when it was made

    def next(self, ids: Sequence[int], room: int, matcher=None) -> list[int]:
        """At most `room` tokens to check after ids[-1] ([]: a plain step). `matcher`: a
        grammar (constraints.py) whose forced tokens are drafted first, and which trims a
        lookup draft to what it allows."""
        if self.drafter is not None:
            self.drafter.extend(ids[len(self.drafter.ids) :])
            self._learn(ids[self._at :])
        drafted, self._looked_up, self._guess = (matcher.forced() if matcher is not None else [])[:room], False, None
        if not drafted and self.drafter is not None:
            candidates, self._ngram = self.drafter.propose(min(MAX_DRAFT, room))
            k = self.lengths.choose(self._ngram, len(candidates)) if candidates else 0
            drafted, self._guess = candidates[:k], (candidates[0] if candidates and not k else None)
            if matcher is not None:
                drafted = drafted[: matcher.valid_prefix(drafted)]  # a draft the grammar refuses is no guess
            self._looked_up = bool(drafted)
        self._drafted, self._at = drafted, len(ids)
        return drafted

    def pick(self, sampler, row: np.ndarray, ids: Sequence[int], index: int, checked: bool, margin: float,
             redo: bool) -> tuple[int | None, bool]:
        """Row `index` (logits (vocab,)) of a call, `checked` if the call checked drafts ->
        (token, near_tie). With a recheck margin (recheck_margin) the greedy token comes with
        its top-2 gap, learnt for the draft lengths; near_tie: a checked row's pick must be
        redone by a one-token step, so the caller drops it and the rest of the call. A plain
        step's gap is read only for lookup drafts (their lengths use it). token None: no
        recheck applies here, the caller samples the row as usual. `redo`: this call is the
        redo, whose position was learnt already."""
        if not margin or not (checked or self.drafter is not None):
            return None, False
        token, gap = sampler.pick(row, ids)
        return token, not redo and self.near_tie(gap, margin, index) and checked

    def near_tie(self, gap: float, margin: float, row: int) -> bool:
        """Whether row `row` of a call, whose top-2 gap is `gap`, is a near-tie under `margin`,
        learnt so that draft lengths price the one-token redos in (DraftLength). A plain
        step's row counts as a first row; a row the grammar forces (gap inf) says nothing
        about the text. Callers skip the redo itself: its position was counted already."""
        tie = gap < margin
        if math.isfinite(gap):
            self.lengths.observe_row(tie, row > 0)
        return tie

    def _learn(self, sampled: Sequence[int]) -> None:
        """Tell the draft length what the last call showed: how many drafts matched, or, on a
        plain step, whether the unchecked guess would have (free information)."""
        if not sampled:
            return
        if self._looked_up:
            accepted = 0
            while accepted < min(len(self._drafted), len(sampled)) and sampled[accepted] == self._drafted[accepted]:
                accepted += 1
            # a draft past the sampled ids was never compared (a near-tie redo stopped the call)
            self.lengths.observe(self._ngram, accepted, min(accepted + 1, len(self._drafted), len(sampled)))
        elif self._guess is not None:
            self.lengths.observe(self._ngram, int(sampled[0] == self._guess), 1)
