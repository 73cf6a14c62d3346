"""Reading tokenizer.json component specs: one place for the "edge does not support X" errors.

Every component of a tokenizer.json is a dict with a "type"; each component module keeps a
table from type to builder and calls `build` from here, so an unknown type always fails at
load with the same one-line message naming what is supported.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from edge.errors import TokenizerError

T = TypeVar("T")

FIX = "re-export the tokenizer from a model that uses supported components"
CORRUPT = "the file is corrupt, re-export it"


def build(kind: str, spec: Any, builders: Mapping[str, Callable[[dict], T]]) -> T:
    """Build the component of this `kind` ("normalizer", "decoder", ...) that `spec` describes."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise TokenizerError(f"tokenizer.json {kind} {spec!r:.80} has no 'type'; {FIX}")
    builder = builders.get(spec["type"])
    if builder is None:
        raise unsupported(kind, spec["type"], builders)
    return builder(spec)


def unsupported(kind: str, name: Any, supported: Any) -> TokenizerError:
    """The error for a component (or option) edge does not implement."""
    return TokenizerError(
        f"tokenizer.json {kind} {name!r} is not supported (edge supports {', '.join(sorted(supported))}); {FIX}"
    )


def field(spec: dict, key: str, kind: str) -> Any:
    """A required field of a component spec."""
    if key not in spec:
        raise TokenizerError(f"tokenizer.json {kind} {spec.get('type')!r} lacks the field {key!r}; {FIX}")
    return spec[key]


MAX_TOKEN_ID = (1 << 24) - 1  # real vocabularies stay below ~300k ids


def vocab(spec: dict, kind: str) -> dict[str, int]:
    """The model's vocab, checked to map tokens to integer ids in range: {"a": 0, ...}."""
    table = field(spec, "vocab", kind)
    if not isinstance(table, dict) or not all(type(i) is int for i in table.values()):
        raise TokenizerError(f"tokenizer.json has a token id that is not an integer in the {kind} vocab; {CORRUPT}")
    bad = next((i for i in table.values() if not 0 <= i <= MAX_TOKEN_ID), None)
    if bad is not None:
        raise TokenizerError(f"tokenizer.json has token id {bad}, outside 0..{MAX_TOKEN_ID}; {CORRUPT}")
    return table


def text(spec: dict, key: str, kind: str, default: str | None = None) -> str:
    """A string field of a component spec (a replacement, a prefix, ...)."""
    value = spec.get(key, default) if default is not None else field(spec, key, kind)
    if not isinstance(value, str):
        raise TokenizerError(f"tokenizer.json {kind} field {key!r} must be a string, got {value!r:.40}; {CORRUPT}")
    return value


def chain(steps: list[Callable[[T], T]]) -> Callable[[T], T]:
    """The steps of a Sequence normalizer or decoder, applied one after the other."""

    def run(value: T) -> T:
        for step in steps:
            value = step(value)
        return value

    return run


def pattern_source(spec: dict, kind: str) -> tuple[str, bool]:
    """The {"String": s} or {"Regex": r} pattern of Split / Replace, as (text, is_regex)."""
    pattern = field(spec, "pattern", kind)
    if isinstance(pattern, dict) and len(pattern) == 1:
        (form, text), = pattern.items()
        if form in ("String", "Regex") and isinstance(text, str):
            return text, form == "Regex"
    raise TokenizerError(f"tokenizer.json {kind} pattern {pattern!r} is neither String nor Regex; {FIX}")
