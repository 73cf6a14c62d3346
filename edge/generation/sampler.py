"""The sampler: next-token logits (vocab,) + the ids so far in, one token id out.

Validated `SamplingParams` become a chain of small pure numpy filters, composed once by
`make_sampler`, in Hugging Face's order: repetition penalty -> temperature -> top-k ->
top-p -> min-p -> draw. A filter removes a token by setting its logit to -inf. Draws come
from one explicit `np.random.Generator`, so a seed reproduces a whole generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from edge.errors import SamplingError

Sampler = Callable[[np.ndarray, Sequence[int]], int]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token; the defaults are greedy with every filter off."""

    temperature: float = 0.0  # 0 -> argmax
    top_k: int = 0  # 0 -> off
    top_p: float = 1.0  # 1 -> off
    min_p: float = 0.0  # 0 -> off
    repetition_penalty: float = 1.0  # 1 -> off
    seed: int | None = None  # None -> fresh entropy each time

    def __post_init__(self) -> None:
        _check(_is_real(self.temperature) and math.isfinite(self.temperature) and self.temperature >= 0,
               "temperature", "a finite number >= 0 (0 is greedy)", self.temperature)
        _check(_is_int(self.top_k) and self.top_k >= 0, "top_k", "an integer >= 0 (0 is off)", self.top_k)
        _check(_is_real(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        _check(_is_real(self.min_p) and 0 <= self.min_p < 1, "min_p", "in [0, 1)", self.min_p)
        _check(_is_real(self.repetition_penalty) and math.isfinite(self.repetition_penalty)
               and self.repetition_penalty > 0, "repetition_penalty", "a finite number > 0 (1 is off)",
               self.repetition_penalty)
        _check(self.seed is None or (_is_int(self.seed) and self.seed >= 0), "seed", "an integer >= 0", self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check(ok: bool, param: str, rule: str, value: object) -> None:
    if not ok:
        raise SamplingError(f"{{param}} must be {rule}, got {value!r}.", param=param)


# --- filters: (vocab,) logits in, (vocab,) logits out ------------------------------------


def apply_repetition_penalty(logits: np.ndarray, previous_ids: Sequence[int], penalty: float) -> np.ndarray:
    """CTRL's penalty on every id seen so far: positive logits divided, negative multiplied.

    Example: logits [2, -2, 1], ids [0, 1], penalty 2 -> [1, -4, 1]
    """
    if len(previous_ids) == 0:
        return logits
    seen = np.unique(np.asarray(previous_ids, dtype=np.int64))
    out = logits.copy()
    scores = out[seen]
    out[seen] = np.where(scores < 0, scores * penalty, scores / penalty)
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Example: logits [2, 4], temperature 2 -> [1, 2]"""
    return logits / temperature


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k highest logits (and any tied with the k-th), like HF's TopKLogitsWarper.

    Example: logits [1, 3, 2], k 2 -> [-inf, 3, 2]
    """
    k = min(k, logits.size)
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the most likely tokens whose probabilities add up to at least p (at least one).

    As HF's TopPLogitsWarper: drop, from the least likely up, while the running sum <= 1 - p.
    Example: probs [0.5, 0.3, 0.2], p 0.7 -> keep tokens 0 and 1
    """
    order = np.argsort(logits, kind="stable")  # ascending
    cumulative = np.cumsum(softmax(logits[order]))
    drop = cumulative <= 1 - p
    drop[-1] = False
    out = logits.copy()
    out[order[drop]] = -np.inf
    return out


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Drop tokens less likely than min_p times the most likely one.

    Example: probs [0.6, 0.3, 0.1], min_p 0.25 -> threshold 0.15 -> keep tokens 0 and 1
    """
    probs = softmax(logits)
    return np.where(probs < min_p * probs.max(), -np.inf, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


# --- the composed sampler ----------------------------------------------------------------


def make_sampler(params: SamplingParams) -> Sampler:
    """Compose the filters `params` switches on, once; the returned function draws one id."""
    penalty = params.repetition_penalty
    if params.greedy:
        return Greedy(penalty)
    filters = _filters(params)
    rng = np.random.default_rng(params.seed)

    def sample(logits: np.ndarray, previous_ids: Sequence[int]) -> int:
        if penalty != 1:
            logits = apply_repetition_penalty(logits, previous_ids, penalty)
        for f in filters:
            logits = f(logits)
        return draw(logits, rng)

    return sample


class Greedy:
    """The argmax sampler, and how sure its pick is. Every filter keeps the most likely
    token, so only the repetition penalty can change argmax."""

    def __init__(self, penalty: float = 1.0):
        self.penalty = penalty

    def __call__(self, logits: np.ndarray, previous_ids: Sequence[int]) -> int:
        return int(np.argmax(self._scored(logits, previous_ids)))

    def pick(self, logits: np.ndarray, previous_ids: Sequence[int]) -> tuple[int, float]:
        """The id, and top-1 minus top-2 of the logits argmax reads. Example: [1, 4, 3.5] -> (1, 0.5)"""
        scored = self._scored(logits, previous_ids)
        best = int(np.argmax(scored))
        second = max(scored[:best].max(initial=-np.inf), scored[best + 1 :].max(initial=-np.inf))
        return best, float(scored[best] - second)

    def _scored(self, logits: np.ndarray, previous_ids: Sequence[int]) -> np.ndarray:
        return logits if self.penalty == 1 else apply_repetition_penalty(logits, previous_ids, self.penalty)


def _filters(params: SamplingParams) -> list[Callable[[np.ndarray], np.ndarray]]:
    chain = [partial(apply_temperature, temperature=params.temperature)]
    if params.top_k > 0:
        chain.append(partial(top_k_filter, k=params.top_k))
    if params.top_p < 1:
        chain.append(partial(top_p_filter, p=params.top_p))
    if params.min_p > 0:
        chain.append(partial(min_p_filter, min_p=params.min_p))
    return chain


def draw(logits: np.ndarray, rng: np.random.Generator) -> int:
    """One id from softmax(logits) by inverse CDF; -inf logits have probability 0."""
    cumulative = np.cumsum(softmax(logits.astype(np.float64)))
    # side="right" never lands on a zero-probability token: the sum must rise past the draw.
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
