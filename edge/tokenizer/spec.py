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
