"""Text files -> chunks that fit an encoder: one paragraph each where it fits, with overlap.

In: a file's text and a token counter. Out: `TextChunk`s (first/last line, text, section
heading), each at most `budget` tokens. A chunk ends at a paragraph end (blank line) once it holds an
eighth of the budget, so a heading or a very short paragraph joins the one after it,
while real paragraphs stay apart (a hit points at the paragraph that matched). A
paragraph too long for one chunk is cut at line ends, and its long lines into word
windows of at most `overlap` tokens; a chunk cut inside a paragraph is followed by one
that starts with its last pieces worth at most `overlap` tokens, so text at the cut is
seen whole at least once.

In Markdown, each chunk also carries the section it sits in (its last two headings, "Setup >
Linux"): a paragraph deep in a section rarely repeats the section's subject, so the index
embeds and matches the heading with the text (`with_heading`); the chunk's text and lines
stay the file's own.

Example (budget 24, overlap 0, one token per word, Markdown): "# Title\n\na b c d\n\ne f" ->
    TextChunk(1, 3, "# Title\n\na b c d", "Title"), TextChunk(5, 5, "e f", "Title")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class TextChunk:
    start_line: int  # 1-based, inclusive
    end_line: int
    text: str
    heading: str = ""  # the Markdown section at start_line ("" outside Markdown or before any heading)


SECTION_DEPTH = 2  # headings kept: the section and its parent ("Ask your files > Python")
_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")  # ATX: "## Setup ##" -> ("##", "Setup")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


HEADING_CHARS = 80  # a heading longer than this is cut: it must fit the room chunks leave it (HEADING_TOKENS)
HEADING_TOKENS = 24  # tokens a chunk leaves for its heading when chunks are as long as the encoder takes


def with_heading(heading: str, text: str) -> str:
    """What the index embeds and matches. Example: ("Setup > Linux", "Run it.") -> "Setup > Linux\nRun it." """
    return f"{heading[:HEADING_CHARS]}\n{text}" if heading else text


def section_headings(text: str) -> list[str]:
    """The Markdown section in force at each line (ATX headings outside fenced code).

    Example: "# A\nx\n## B\ny\n```\n# not a heading\n```" -> ["A", "A", "A > B", "A > B", ...]
    """
    path: list[tuple[int, str]] = []  # (level, title), outermost first
    fence, sections = "", []
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if opening and not fence:
            fence = opening.group(1)  # a fence closes on the same character, at least as long, bare
        elif opening and opening.group(1).startswith(fence) and not line[opening.end():].strip():
            fence = ""
        elif not fence and (heading := _HEADING.fullmatch(line)) and heading.group(2):
            level = len(heading.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, heading.group(2))]
        sections.append(" > ".join(t for _, t in path[-SECTION_DEPTH:]))
    return sections


@dataclass(frozen=True)
class _Piece:
    """A paragraph, a line of one, or a word window of a line: the unit chunks are made of."""

    start_line: int
    end_line: int
    text: str
    tokens: int
    paragraph: int  # pieces of the same paragraph join with a newline, others with a blank line


def chunk_text(text: str, count: Callable[[str], int], budget: int, overlap: int,
               markdown: bool = False) -> list[TextChunk]:
    """`markdown`: give each chunk its section heading (a `#` line elsewhere is a comment)."""
    if budget < 1 or not 0 <= overlap < budget:
        raise ValueError(f"need budget >= 1 and 0 <= overlap < budget, got {budget}, {overlap}")
    chunks, current = [], []
    for piece in _pieces(text, count, budget, overlap or budget):
        size = sum(p.tokens for p in current)
        same_paragraph = bool(current) and current[-1].paragraph == piece.paragraph
        if current and (size + piece.tokens > budget or (not same_paragraph and size >= budget // 8)):
            chunks.append(_join(current))
            current = _tail(current, overlap, budget - piece.tokens) if same_paragraph else []
        current.append(piece)
    if current:
        chunks.append(_join(current))
    if not markdown:
        return chunks
    sections = section_headings(text)
    return [TextChunk(c.start_line, c.end_line, c.text, sections[c.start_line - 1]) for c in chunks]


def _tail(pieces: list[_Piece], overlap: int, room: int) -> list[_Piece]:
    """The last pieces worth at most `overlap` tokens (and `room`, so the next piece fits)."""
    tail, total = [], 0
    for piece in reversed(pieces[1:]):  # never the whole chunk again
        total += piece.tokens
        if total > min(overlap, room):
            break
        tail.insert(0, piece)
    return tail


def _join(pieces: list[_Piece]) -> TextChunk:
    text = pieces[0].text
    for before, piece in zip(pieces, pieces[1:]):
        same_line = before.end_line == piece.start_line
        text += (" " if same_line else "\n" if before.paragraph == piece.paragraph else "\n\n") + piece.text
    return TextChunk(pieces[0].start_line, pieces[-1].end_line, text)


def _pieces(text: str, count: Callable[[str], int], budget: int, step: int) -> Iterator[_Piece]:
    for index, (start, lines) in enumerate(_paragraphs(text)):
        whole = "\n".join(lines)
        tokens = count(whole)
        if tokens <= budget:
            yield _Piece(start, start + len(lines) - 1, whole, tokens, index)
            continue
        for offset, line in enumerate(lines):
            yield from _line_pieces(line, start + offset, count, step, index)


def _line_pieces(line: str, number: int, count: Callable[[str], int], step: int, paragraph: int):
    """A line as one piece, or as greedy word windows of at most `step` tokens."""
    tokens = count(line)
    if tokens <= step:
        yield _Piece(number, number, line, tokens, paragraph)
        return
    window, size = [], 0
    for word in line.split():
        n = count(word)
        if window and size + n > step:
            yield _Piece(number, number, " ".join(window), size, paragraph)
            window, size = [], 0
        window.append(word)
        size += n  # a single word over `step` stays whole (the encoder truncates beyond its max)
    if window:
        yield _Piece(number, number, " ".join(window), size, paragraph)


def _paragraphs(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each run of non-blank lines; trailing spaces kept off."""
    start, lines = 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line.rstrip())
        elif lines:
            yield start, lines
            lines = []
    if lines:
        yield start, lines
