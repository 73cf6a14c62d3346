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


# A tokenizer.json regex may backtrack catastrophically: `(a|aa)+$` took over 60 s on a
# 45-character prompt. Each call gets this long, plus this much per character (2 s per
# million: real pre-tokenizer patterns run at ~0.1-0.3 s per million characters).
TIMEOUT_S = 2.0
TIMEOUT_PER_CHAR_S = 2e-6


class BoundedPattern:
    """A regex from tokenizer.json, run with a time limit: a TokenizerError naming the pattern
    rather than a hang. It offers the two calls the tokenizer makes, `finditer` and `sub`."""

    def __init__(self, source: str, is_regex: bool, kind: str):
        self.source, self.kind = source, kind
        try:
            self.compiled = regex.compile(source if is_regex else regex.escape(source))
        except (regex.error, RecursionError, OverflowError) as error:
            raise TokenizerError(
                f"tokenizer.json {kind} pattern {source!r:.80} does not compile ({error}); fix the pattern"
            ) from None

    def finditer(self, text: str) -> list[regex.Match]:
        return self._bounded(lambda limit: list(self.compiled.finditer(text, timeout=limit)), text)

    def sub(self, replace, text: str) -> str:
        return self._bounded(lambda limit: self.compiled.sub(replace, text, timeout=limit), text)

    def _bounded(self, run, text: str):
        try:
            return run(TIMEOUT_S + TIMEOUT_PER_CHAR_S * len(text))
        except TimeoutError:
            raise TokenizerError(
                f"tokenizer.json {self.kind} pattern {self.source!r:.80} took too long on a text of {len(text)} "
                "characters (catastrophic backtracking?); fix the pattern or use another tokenizer"
            ) from None


def compile_pattern(text: str, is_regex: bool, kind: str) -> BoundedPattern:
    """A pattern from tokenizer.json: a regex, or a literal string matched as is."""
    return BoundedPattern(text, is_regex, kind)


def find_matches(pattern: regex.Pattern | BoundedPattern, text: str) -> list[tuple[int, int, bool]]:
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


def split_piece(piece: Piece, pattern: regex.Pattern | BoundedPattern, behavior: str, invert: bool = False) -> list[Piece]:
    """Split one piece; empty pieces are dropped, as `tokenizers` drops them.

    Example: (("a b", True), WHITESPACE, "Removed") -> [("a", True), ("b", False)]
    """
    text, first = piece
    spans = find_matches(pattern, text)
    if invert:
        spans = [(s, e, not is_match) for s, e, is_match in spans]
    return [(text[s:e], first and s == 0) for s, e in apply_behavior(spans, behavior) if e > s]
