"""Pooling: an encoder's token vectors -> one vector per text, as plain numpy functions.

The manifest's `Pooling.mode` picks the function (no subclass per model); padded positions
(mask 0) never count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.errors import BundleError


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the real tokens' vectors. hidden (B, S, H), mask (B, S) -> (B, H).

    Example: vectors [[1, 1], [3, 3], [9, 9]] with mask [1, 1, 0] -> [2, 2]
    """
    weights = mask.astype(np.float32)[..., None]  # (B, S, 1)
    total = (hidden * weights).sum(axis=1)  # (B, H)
    count = np.maximum(weights.sum(axis=1), 1e-9)  # (B, 1): sentence-transformers' clamp
    return (total / count).astype(np.float32)


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first token's vector ([CLS]). hidden (B, S, H) -> (B, H)."""
    return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero. (N, H) -> (N, H)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"mean": mean_pool, "cls": cls_pool}


def pooler(mode: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if mode not in POOLERS:
        raise BundleError(f"pooling mode {mode!r} is not one of {sorted(POOLERS)}. Re-export the bundle.")
    return POOLERS[mode]
