"""Cutting text into pieces around regex matches, the way `tokenizers` splits strings.

A piece is `(text, first)`: `first` is True only for a piece that starts at offset 0 of the
original input, which Metaspace's `prepend_scheme: "first"` needs to know.
"""

from __future__ import annotations

import regex

from edge.errors import TokenizerError

Piece = tuple[str, bool]

# Rust's char::is_whitespace (the White_Space property), which `tokenizers` uses throughout.
WHITESPACE = regex.compile(r"\p{White_Space}")
BEHAVIORS = ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def compile_pattern(text: str, is_regex: bool, kind: str) -> regex.Pattern:
    """A pattern from tokenizer.json: a regex, or a literal string matched as is."""
    try:
        return regex.compile(text if is_regex else regex.escape(text))
    except regex.error as error:
        raise TokenizerError(
            f"tokenizer.json {kind} pattern {text!r} does not compile ({error}); fix the pattern"
        ) from None


def find_matches(pattern: regex.Pattern, text: str) -> list[tuple[int, int, bool]]:
    """Spans covering `text`, flagged True where `pattern` matched.

    Example: (r"\\d+", "ab12c") -> [(0, 2, False), (2, 4, True), (4, 5, False)]
    """
    if not text:
        return [(0, 0, False)]
    spans, previous = [], 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if previous != start:
            spans.append((previous, start, False))
        spans.append((start, end, True))
        previous = end
    if previous != len(text):
        spans.append((previous, len(text), False))
    return spans


def apply_behavior(spans: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    """Which spans become pieces, given what to do with the matched delimiters.

    Example: ([(0, 2, False), (2, 3, True), (3, 5, False)], "MergedWithPrevious") -> [(0, 3), (3, 5)]
    """
    if behavior == "Isolated":
        return [(s, e) for s, e, _ in spans]
    if behavior == "Removed":
        return [(s, e) for s, e, is_match in spans if not is_match]
    if behavior == "MergedWithNext":
        mirrored = [(-e, -s, is_match) for s, e, is_match in reversed(spans)]
        return [(-e, -s) for s, e in reversed(apply_behavior(mirrored, "MergedWithPrevious"))]
    merged: list[list[int]] = []
    previous = False
    for start, end, is_match in spans:
        glue = is_match == previous if behavior == "Contiguous" else (is_match and not previous)
        if glue and merged:
            merged[-1][1] = end
        else:
            merged.append([start, end])
        previous = is_match
    return [(s, e) for s, e in merged]


def split_piece(piece: Piece, pattern: regex.Pattern, behavior: str, invert: bool = False) -> list[Piece]:
    """Split one piece; empty pieces are dropped, as `tokenizers` drops them.

    Example: (("a b", True), WHITESPACE, "Removed") -> [("a", True), ("b", False)]
    """
    text, first = piece
    spans = find_matches(pattern, text)
    if invert:
        spans = [(s, e, not is_match) for s, e, is_match in spans]
    return [(text[s:e], first and s == 0) for s, e in apply_behavior(spans, behavior) if e > s]
