"""How a bundle encodes token order, as arrays to print and plot.

In: the manifest's `Positional` (and for learned positions the bundle's table). Out: a
`Positions` with the first n rows of the encoding and the similarity of two positions as
a function of their distance d = 0 .. n-1:
- learned: rows of the trained table; similarity = mean cosine of rows p and p + d
- sinusoidal: PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(same); same similarity
- rotary: angle[p, i] = p * base^(-2i/rotary_dim), one per rotated channel pair; a query
  and a key d apart meet at angle d * theta_i, so similarity = mean_i cos(d * theta_i)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.bundle import Bundle
from edge.errors import BundleError, InputError
from edge.inspect import tables

SINUSOIDAL_BASE = 10000.0


@dataclass(frozen=True)
class Positions:
    kind: str  # learned, sinusoidal, rotary
    table: np.ndarray  # (n, dims): vectors, or rotary angles in radians (n, rotary_dim / 2)
    similarity: np.ndarray  # (n,) at distance 0 .. n-1
    base: float | None = None  # sinusoidal / rotary


def sinusoidal(n: int, dim: int, base: float = SINUSOIDAL_BASE) -> np.ndarray:
    """(n, dim), sin in even channels and cos in odd ones (Vaswani et al. 2017)."""
    pair = np.arange(0, dim, 2, dtype=np.float64)  # (dim/2,) = 2i
    angles = np.arange(n, dtype=np.float64)[:, None] / base ** (pair / dim)  # (n, dim/2)
    table = np.empty((n, dim), dtype=np.float64)
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles[:, : dim // 2])
    return table.astype(np.float32)


def rotary_angles(n: int, dim: int, base: float) -> np.ndarray:
    """(n, dim/2): position p times frequency base^(-2i/dim) (HF's rotate_half convention)."""
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)
    return np.outer(np.arange(n, dtype=np.float64), inv_freq)


def similarity_by_distance(table: np.ndarray) -> np.ndarray:
    """(n, dims) -> (n,): mean cosine between rows p and p + d over all p, for each d."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T  # (n, n)
    return np.array([np.diagonal(cos, d).mean() for d in range(len(table))], dtype=np.float32)


def positions(bundle: Bundle, n: int = 64) -> Positions:
    model = bundle.manifest.model
    positional = model.positional
    if not 2 <= n <= model.context_length:
        raise InputError(f"-n must be between 2 and the context length {model.context_length}, got {n}.")
    if positional.kind == "rotary":
        angles = rotary_angles(n, positional.rotary_dim, positional.rope_theta)
        return Positions("rotary", angles, np.cos(angles).mean(axis=1).astype(np.float32), positional.rope_theta)
    if positional.kind == "sinusoidal":
        base = positional.rope_theta or SINUSOIDAL_BASE
        table = sinusoidal(n, model.hidden_size, base)
        return Positions("sinusoidal", table, similarity_by_distance(table), base)
    ref = tables.inspection(bundle).positions
    if ref is None:
        raise BundleError(f"bundle {bundle.path} does not record its learned position table. Re-export it.")
    table = np.asarray(tables.read(bundle, ref)[:n], dtype=np.float32)  # (n, hidden)
    return Positions("learned", table, similarity_by_distance(table))
