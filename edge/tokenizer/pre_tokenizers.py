"""Pre-tokenizers: one piece of text -> the words the model tokenizes separately.

Each is a callable `Piece -> list[Piece]` (see `splitting.Piece`); a Sequence applies its
steps one after the other to every piece, as `tokenizers` does.
"""

from __future__ import annotations

from typing import Callable

import regex

from edge.tokenizer import spec as specs
from edge.tokenizer.bytelevel import ByteLevelPreTokenizer
from edge.tokenizer.splitting import BEHAVIORS, WHITESPACE, Piece, compile_pattern, split_piece
from edge.tokenizer.unicode8 import PUNCTUATION

PreTokenizer = Callable[[Piece], list[Piece]]

# ASCII punctuation (which includes symbols such as $ + < = > ^ ` | ~) or Unicode 8.0 P*.
_PUNCTUATION = regex.compile(rf"[!-/:-@\[-`{{-~]|{PUNCTUATION.pattern}")
_NUMERIC = regex.compile(r"\p{N}")
_WORDS_OR_SYMBOLS = regex.compile(r"\w+|[^\w\s]+")


def _behavior(spec: dict, default: str | None = None) -> str:
    behavior = spec.get("behavior", default)
    if behavior not in BEHAVIORS:
        raise specs.unsupported(f"pre_tokenizer {spec['type']} behavior", behavior, BEHAVIORS)
    return behavior


def _splitter(pattern: regex.Pattern, behavior: str, invert: bool = False) -> PreTokenizer:
    return lambda piece: split_piece(piece, pattern, behavior, invert)


def _chain(steps: list[PreTokenizer]) -> PreTokenizer:
    def pre_tokenize(piece: Piece) -> list[Piece]:
        pieces = [piece]
        for step in steps:
            pieces = [out for p in pieces for out in step(p)]
        return pieces

    return pre_tokenize


def _split(spec: dict) -> PreTokenizer:
    pattern = compile_pattern(*specs.pattern_source(spec, "pre_tokenizer Split"), "pre_tokenizer Split")
    return _splitter(pattern, _behavior(spec), bool(spec.get("invert", False)))


def _metaspace(spec: dict) -> PreTokenizer:
    replacement = specs.text(spec, "replacement", "pre_tokenizer Metaspace")
    scheme = prepend_scheme(spec)
    split = _splitter(regex.compile(regex.escape(replacement)), "MergedWithNext") if spec.get("split", True) else None

    def pre_tokenize(piece: Piece) -> list[Piece]:
        text, first = piece
        text = text.replace(" ", replacement)
        if not text.startswith(replacement) and (scheme == "always" or (scheme == "first" and first)):
            text = replacement + text
        return split((text, first)) if split else [(text, first)]

    return pre_tokenize


def prepend_scheme(spec: dict) -> str:
    """Metaspace's prepend_scheme, honouring the legacy add_prefix_space=false."""
    scheme = "never" if spec.get("add_prefix_space") is False else spec.get("prepend_scheme", "always")
    if scheme not in ("first", "never", "always"):
        raise specs.unsupported("Metaspace prepend_scheme", scheme, ("first", "never", "always"))
    return scheme


def _sequence(spec: dict) -> PreTokenizer:
    return _chain([build(s) for s in specs.field(spec, "pretokenizers", "pre_tokenizer")])


BUILDERS: dict[str, Callable[[dict], PreTokenizer]] = {
    "ByteLevel": ByteLevelPreTokenizer,
    "Split": _split,
    "Sequence": _sequence,
    "BertPreTokenizer": lambda spec: _chain(
        [_splitter(WHITESPACE, "Removed"), _splitter(_PUNCTUATION, "Isolated")]
    ),
    "Metaspace": _metaspace,
    "Whitespace": lambda spec: _splitter(_WORDS_OR_SYMBOLS, "Removed", invert=True),
    "WhitespaceSplit": lambda spec: _splitter(WHITESPACE, "Removed"),
    "Punctuation": lambda spec: _splitter(_PUNCTUATION, _behavior(spec, "Isolated")),
    "Digits": lambda spec: _splitter(
        _NUMERIC, "Isolated" if spec.get("individual_digits") else "Contiguous"
    ),
}


def build(spec: dict) -> PreTokenizer:
    """A pre-tokenizer from its tokenizer.json spec."""
    return specs.build("pre_tokenizer", spec, BUILDERS)
