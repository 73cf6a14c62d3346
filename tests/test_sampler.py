"""The sampler: each filter by hand and against transformers' logits processors; seeded draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.cli import flag as cli_flag
from edge.errors import SamplingError
from edge.generation.sampler import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    make_sampler,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)

INF = -np.inf


def kept(logits: np.ndarray) -> list[int]:
    return np.flatnonzero(np.isfinite(logits)).tolist()


# --- by hand ---------------------------------------------------------------------------


def test_repetition_penalty_by_hand():
    logits = np.array([2.0, -2.0, 1.0, 0.5])
    out = apply_repetition_penalty(logits, [0, 1, 1], 2.0)  # repeats count once
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0, 0.5])
    np.testing.assert_allclose(logits, [2.0, -2.0, 1.0, 0.5])  # pure
    np.testing.assert_allclose(apply_repetition_penalty(logits, [], 2.0), logits)


def test_temperature_by_hand():
    np.testing.assert_allclose(apply_temperature(np.array([2.0, 4.0]), 2.0), [1.0, 2.0])


@pytest.mark.parametrize(
    "logits, k, expected",
    [
        ([1.0, 3.0, 2.0, 0.0], 2, [INF, 3.0, 2.0, INF]),
        ([3.0, 2.0, 2.0, 0.0], 2, [3.0, 2.0, 2.0, INF]),  # ties with the k-th stay, as in HF
        ([1.0, 3.0, 2.0], 1, [INF, 3.0, INF]),
        ([1.0, 3.0, 2.0], 10, [1.0, 3.0, 2.0]),  # k beyond the vocabulary keeps all
    ],
)
def test_top_k_by_hand(logits, k, expected):
    np.testing.assert_array_equal(top_k_filter(np.array(logits), k), expected)


# probabilities 0.5, 0.3, 0.15, 0.05; top-p keeps the fewest most likely whose sum >= p
@pytest.mark.parametrize("p, expected", [(0.4, [0]), (0.6, [0, 1]), (0.9, [0, 1, 2]), (0.99, [0, 1, 2, 3]),
                                         (1e-9, [0]), (1.0, [0, 1, 2, 3])])
def test_top_p_by_hand(p, expected):
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    assert kept(top_p_filter(logits, p)) == expected


# probabilities 0.6, 0.3, 0.1; min-p drops tokens below min_p * 0.6
@pytest.mark.parametrize("min_p, expected", [(0.1, [0, 1, 2]), (0.25, [0, 1]), (0.6, [0]), (0.99, [0])])
def test_min_p_by_hand(min_p, expected):
    logits = np.log([0.6, 0.3, 0.1])
    out = min_p_filter(logits, min_p)
    assert kept(out) == expected
    np.testing.assert_allclose(out[expected], logits[expected])


# --- against transformers' processors --------------------------------------------------


def hf(processor, logits: np.ndarray, ids=(0,)) -> np.ndarray:
    import torch

    scores = torch.from_numpy(logits.copy())[None, :]
    return processor(torch.tensor([list(ids)]), scores)[0].numpy()


@pytest.fixture
def random_logits():
    return np.random.default_rng(7).normal(0, 3, size=(20, 200))  # (trial, vocab) float64


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 0.9, 0.99])
def test_top_p_matches_hf(random_logits, p):
    from transformers import TopPLogitsWarper

    for logits in random_logits:
        np.testing.assert_array_equal(top_p_filter(logits, p), hf(TopPLogitsWarper(p), logits))


@pytest.mark.parametrize("k", [1, 5, 50, 199, 200])
def test_top_k_matches_hf(random_logits, k):
    from transformers import TopKLogitsWarper

    for logits in random_logits:
        np.testing.assert_array_equal(top_k_filter(logits, k), hf(TopKLogitsWarper(k), logits))


@pytest.mark.parametrize("min_p", [0.01, 0.1, 0.5, 0.9])
def test_min_p_matches_hf(random_logits, min_p):
    from transformers import MinPLogitsWarper

    for logits in random_logits:
        np.testing.assert_array_equal(min_p_filter(logits, min_p), hf(MinPLogitsWarper(min_p), logits))


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_hf(random_logits, penalty):
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = np.random.default_rng(1).integers(0, 200, size=30).tolist()
    for logits in random_logits:
        expected = hf(RepetitionPenaltyLogitsProcessor(penalty), logits, ids)
        np.testing.assert_allclose(apply_repetition_penalty(logits, ids, penalty), expected)


# --- the composed sampler ----------------------------------------------------------------


def test_greedy_is_argmax(random_logits):
    sample = make_sampler(SamplingParams())
    for logits in random_logits:
        assert sample(logits, [1, 2]) == int(np.argmax(logits))


def test_greedy_applies_repetition_penalty():
    logits = np.array([3.0, 2.0, 0.0])
    assert make_sampler(SamplingParams(repetition_penalty=2.0))(logits, [0]) == 1


def draws(params: SamplingParams, logits: np.ndarray, n: int) -> list[int]:
    sample = make_sampler(params)
    return [sample(logits, []) for _ in range(n)]


def test_same_seed_same_draws_different_seed_differs(random_logits):
    logits = random_logits[0]
    first = draws(SamplingParams(temperature=1.0, seed=3), logits, 50)
    assert first == draws(SamplingParams(temperature=1.0, seed=3), logits, 50)
    assert first != draws(SamplingParams(temperature=1.0, seed=4), logits, 50)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, seed=0),
        SamplingParams(temperature=0.7, top_k=6, seed=1),
        SamplingParams(temperature=1.3, top_p=0.8, seed=2),
        SamplingParams(temperature=1.0, min_p=0.1, seed=3),
        SamplingParams(temperature=0.8, top_k=7, top_p=0.9, min_p=0.05, repetition_penalty=1.5, seed=4),
    ],
)
def test_empirical_frequencies_match_filtered_softmax(params):
    """20k draws against the distribution transformers' warpers give (a chi-square bound)."""
    import torch
    from transformers import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = np.random.default_rng(11).normal(0, 1.5, size=10)  # (vocab,)
    previous = [0, 3]
    chain = [RepetitionPenaltyLogitsProcessor(params.repetition_penalty), TemperatureLogitsWarper(params.temperature)]
    chain += [TopKLogitsWarper(params.top_k)] if params.top_k else []
    chain += [TopPLogitsWarper(params.top_p)] if params.top_p < 1 else []
    chain += [MinPLogitsWarper(params.min_p)] if params.min_p else []
    expected_logits = logits
    for processor in chain:
        expected_logits = hf(processor, expected_logits, previous)
    expected = torch.softmax(torch.from_numpy(expected_logits), -1).numpy()

    n = 20_000
    sample = make_sampler(params)
    counts = np.bincount([sample(logits, previous) for _ in range(n)], minlength=logits.size)
    support = expected > 0
    assert counts[~support].sum() == 0, "drew a token the filters removed"
    chi2 = (((counts - n * expected)[support]) ** 2 / (n * expected[support])).sum()
    assert chi2 < 35, f"chi-square {chi2:.1f} over {support.sum() - 1} degrees of freedom"


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("temperature", -0.1, "--temperature"),
        ("temperature", math.inf, "--temperature"),
        ("temperature", math.nan, "--temperature"),
        ("temperature", "1", "--temperature"),
        ("top_k", -1, "--top-k"),
        ("top_k", 2.5, "--top-k"),
        ("top_k", True, "--top-k"),
        ("top_p", 0.0, "--top-p"),
        ("top_p", 1.5, "--top-p"),
        ("top_p", math.nan, "--top-p"),
        ("min_p", -0.1, "--min-p"),
        ("min_p", 1.0, "--min-p"),
        ("repetition_penalty", 0.0, "--repetition-penalty"),
        ("repetition_penalty", -1.0, "--repetition-penalty"),
        ("repetition_penalty", math.inf, "--repetition-penalty"),
        ("seed", -1, "--seed"),
        ("seed", 1.5, "--seed"),
    ],
)
def test_bad_values_rejected(field, value, flag):
    """The error carries the keyword as `param`; the CLI renders it as the flag."""
    with pytest.raises(SamplingError, match=f"^{field} must") as info:
        SamplingParams(**{field: value})
    assert info.value.param == field and cli_flag(field) == flag
    assert info.value.render(flag).startswith(f"{flag} must")
    assert "\n" not in str(info.value) and repr(value) in str(info.value)


def test_error_message_names_flag_and_value():
    with pytest.raises(SamplingError, match=r"top_p must be in \(0, 1\], got 1.5") as info:
        SamplingParams(top_p=1.5)
    assert info.value.render("--top-p") == "--top-p must be in (0, 1], got 1.5."
