"""Chunking text files for the index: budgets, paragraphs, line numbers, overlap."""

from __future__ import annotations

import random

import pytest

from edge.embeddings.chunking import TextChunk, chunk_text, section_headings, with_heading


def words(text: str) -> int:
    return len(text.split())


def _corpus(seed: int) -> str:
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(30):
        lines = [" ".join(f"w{rng.randrange(999)}" for _ in range(rng.choice([1, 3, 8, 40]))) for _ in range(rng.randint(1, 4))]
        paragraphs.append("\n".join(lines))
    return ("\n\n" + "\n" * rng.randint(0, 2)).join(paragraphs)


def test_example_from_the_docstring():
    assert chunk_text("# Title\n\na b c d\n\ne f", words, 24, 0, markdown=True) == [
        TextChunk(1, 3, "# Title\n\na b c d", "Title"), TextChunk(5, 5, "e f", "Title")]
    # the same text outside Markdown: the same chunks, no heading ("#" starts a comment there)
    assert chunk_text("# Title\n\na b c d\n\ne f", words, 24, 0) == [TextChunk(1, 3, "# Title\n\na b c d"),
                                                                       TextChunk(5, 5, "e f")]


@pytest.mark.parametrize("text, want", [
    ("", []),
    ("intro\n# A\nx", ["", "A", "A"]),
    ("# A\n## B\n### C\n## D\n# E", ["A", "A > B", "B > C", "A > D", "E"]),  # the last two levels
    ("## Setup ##\n#not a heading\n####### seven", ["Setup", "Setup", "Setup"]),  # closing #s cut; not ATX
    ("# A\n```sh\n# a shell comment\n```\n## B", ["A", "A", "A", "A", "A > B"]),  # fenced code has none
    ("# A\n~~~\n```\n# still code\n~~~\n## B", ["A", "A", "A", "A", "A", "A > B"]),  # a fence closes its kind
    ("   # indented up to 3\n    # code", ["indented up to 3", "indented up to 3"]),
    ("#\n# \n# Ä ✓ 中文", ["", "", "Ä ✓ 中文"]),  # empty headings name nothing
])
def test_section_headings(text, want):
    assert section_headings(text) == want


def test_each_chunk_carries_the_section_of_its_first_line():
    text = "# Guide\n\nintro words here\n\n## Install\n\n" + "\n\n".join(f"step {i} " * 6 for i in range(6))
    chunks = chunk_text(text, words, 16, 0, markdown=True)
    sections = section_headings(text)
    assert [c.heading for c in chunks] == [sections[c.start_line - 1] for c in chunks]
    assert chunks[0].heading == "Guide" and chunks[-1].heading == "Guide > Install"
    assert with_heading("Guide > Install", "step 5") == "Guide > Install\nstep 5" and with_heading("", "x") == "x"


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget, overlap", [(10, 0), (16, 4), (64, 16)])
def test_chunks_fit_cover_every_word_and_point_at_their_lines(seed, budget, overlap):
    text = _corpus(seed)
    lines = text.splitlines()
    chunks = chunk_text(text, words, budget, overlap)
    assert all(words(c.text) <= budget for c in chunks)
    covered = set()
    for c in chunks:
        source = " ".join(lines[c.start_line - 1 : c.end_line]).split()
        assert set(c.text.split()) <= set(source)  # each chunk's words come from its line range
        covered.update((n, w) for n in range(c.start_line, c.end_line + 1) for w in c.text.split()
                       if w in lines[n - 1].split())
    every = {(n, w) for n, line in enumerate(lines, 1) for w in line.split()}
    assert every <= covered


def test_paragraphs_stay_whole_and_apart_and_short_ones_join_the_next():
    paragraphs = ["# Heading", "one two three\nfour five", "six seven eight nine", "x", "ten eleven"]
    chunks = chunk_text("\n\n".join(paragraphs), words, 32, 4)
    assert [c.text for c in chunks] == ["# Heading\n\none two three\nfour five", "six seven eight nine",
                                        "x\n\nten eleven"]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 4), (6, 6), (8, 10)]


def test_long_line_is_cut_into_overlapping_windows():
    line = " ".join(str(i) for i in range(40))
    chunks = chunk_text(line, words, 10, 4)
    assert len(chunks) > 4 and all(c.start_line == c.end_line == 1 for c in chunks)
    for before, after in zip(chunks, chunks[1:]):
        assert set(before.text.split()) & set(after.text.split())  # consecutive chunks share words
    assert chunks[0].text.split()[0] == "0" and chunks[-1].text.split()[-1] == "39"


def test_blank_text_gives_no_chunks_and_bad_settings_are_refused():
    assert chunk_text("", words, 8, 0) == [] and chunk_text("\n \n\t\n", words, 8, 0) == []
    for budget, overlap in [(0, 0), (8, 8), (8, -1)]:
        with pytest.raises(ValueError):
            chunk_text("a b", words, budget, overlap)


def test_a_fence_closes_only_on_a_bare_fence_as_long():
    """CommonMark: a ```sh line inside a ````md block is code, and so is the `# inside` after it."""
    text = "# A\n````md\n```sh\n# inside code\n```\n````\n## B\ntext"
    assert section_headings(text) == ["A"] * 6 + ["A > B"] * 2
