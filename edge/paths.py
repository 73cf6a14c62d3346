"""Where edge keeps things: the cache (sources, bundles), the default bundles (generation,
embeddings), and how a model named on the command line or in `edge.load` is found: a
bundle folder's path, or the name of a bundle in the cache (`edge models` lists them)."""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import BundleError

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


def bundles_dir() -> Path:
    return cache_dir() / "bundles"


def resolve_model(model: str | Path | None, env: str = "EDGE_MODEL", default: str = DEFAULT_BUNDLE,
                  make: str = "run `make demo` (or `edge pull`) to make it") -> Path:
    """The bundle folder `model` names: a path, else a name in the cache. None: $`env`, else
    the default bundle. Example: "smollm2-135m-instruct-int8" -> ~/.cache/edge/bundles/smollm2-135m-instruct-int8"""
    given = model if model is not None else os.environ.get(env) or None
    if given is None:
        path = bundles_dir() / default
        if not path.exists():
            raise BundleError(f"no model given and the default {default} is not in {bundles_dir()}. Pass -m "
                              f"BUNDLE or a model name, set {env}, or {make}.")
        return path
    path = Path(given).expanduser()
    if path.exists() or not is_name(str(given)):
        return path  # a path: open_bundle says what is wrong with it
    if (bundles_dir() / str(given)).exists():
        return bundles_dir() / str(given)
    raise BundleError(f"no bundle {given}: it is neither a folder here nor a model in {bundles_dir()}. "
                      "`edge models` lists the names; `edge pull SOURCE` makes one.")


def is_name(text: str) -> bool:
    """A cache name: one path component, not hidden. Example: "a-b.c" -> True, "./a" -> False"""
    return bool(text) and "/" not in text and os.sep not in text and not text.startswith(".")
