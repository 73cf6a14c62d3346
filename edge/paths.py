"""Where edge keeps things: the cache (sources, bundles) and the default bundles (generation, embeddings)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BUNDLE = "smollm2-135m-instruct-int8"
DEFAULT_EMBEDDING_BUNDLE = "all-minilm-l6-v2-int8"


def cache_dir() -> Path:
    """EDGE_HOME, else $XDG_CACHE_HOME/edge, else ~/.cache/edge."""
    if os.environ.get("EDGE_HOME"):
        return Path(os.environ["EDGE_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge"


def default_bundle() -> Path:
    return cache_dir() / "bundles" / DEFAULT_BUNDLE


def default_embedding_bundle() -> Path:
    return cache_dir() / "bundles" / DEFAULT_EMBEDDING_BUNDLE
