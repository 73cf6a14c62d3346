"""Added tokens (specials such as "<|im_end|>" and user-added words): finding them in text.

`tokenizers` cuts them out of the text before anything else, in two passes: tokens with
normalized=false are matched on the raw text, then each remaining stretch is normalized and
tokens with normalized=true are matched on the result. Matching is leftmost-longest and
honours each token's single_word, lstrip and rstrip flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import regex

from edge.errors import TokenizerError
from edge.tokenizer.spec import CORRUPT

# Rust regex's \w (Unicode word characters), used by `tokenizers` for single_word.
_WORD_CHAR = regex.compile(r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]")
_LEADING_SPACE = regex.compile(r"\p{White_Space}*")
_SPACE = regex.compile(r"\p{White_Space}")

# (text, id of the added token it is, or None for text to tokenize, starts the input)
Segment = tuple[str, "int | None", bool]


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True


class AddedVocabulary:
    def __init__(self, entries: list, model_vocab: dict[str, int], normalizer: Callable[[str], str] | None):
        self.by_id: dict[int, AddedToken] = {}
        self.ids: dict[str, int] = {}
        next_id = len(model_vocab)  # ids in the JSON are only hints, as in `tokenizers`
        for token in map(_parse, entries):
            if not token.content:
                continue  # `tokenizers` ignores empty added tokens too
            token_id = self.ids.get(token.content, model_vocab.get(token.content))
            if token_id is None:
                token_id, next_id = next_id, next_id + 1
            self.ids[token.content] = token_id
            self.by_id[token_id] = token
        self.special = {t.content for t in self.by_id.values() if t.special}
        self.overlap = sum(content in model_vocab for content in self.ids)
        # a normalized token is matched (and decoded) in its normalized form
        self.text = {
            i: normalizer(t.content) if t.normalized and normalizer else t.content for i, t in self.by_id.items()
        }
        self._raw = _Matcher({t.content: i for i, t in self.by_id.items() if not t.normalized})
        self._normalized = _Matcher({self.text[i]: i for i, t in self.by_id.items() if t.normalized})

    def split(self, text: str, normalizer: Callable[[str], str] | None) -> list[Segment]:
        """Example (<|im_end|> = 2): "hi<|im_end|>" -> [("hi", None, True), ("<|im_end|>", 2, False)]"""
        segments: list[Segment] = []
        for start, stop, token_id in self._find(text, self._raw):
            if token_id is not None:
                segments.append((text[start:stop], token_id, start == 0))
                continue
            piece = normalizer(text[start:stop]) if normalizer else text[start:stop]
            segments += [
                (piece[s:e], i, start == 0 and s == 0) for s, e, i in self._find(piece, self._normalized) if e > s
            ]
        return segments

    def _find(self, text: str, matcher: _Matcher) -> list[tuple[int, int, int | None]]:
        """Spans of `text`, each an added token (with its id) or text between them (None)."""
        spans: list[tuple[int, int, int | None]] = []
        offset = 0
        for match in matcher.finditer(text):
            start, stop = match.span()
            token_id = matcher.ids[match.group()]
            token = self.by_id[token_id]
            if token.single_word and not _stands_alone(text, start, stop):
                continue
            if token.lstrip:
                space = start
                while space > 0 and _SPACE.match(text, space - 1):
                    space -= 1
                start = max(space, offset)
            if token.rstrip:
                stop = _LEADING_SPACE.match(text, stop).end()
            if offset < start:
                spans.append((offset, start, None))
            spans.append((start, stop, token_id))
            offset = stop
        if offset != len(text):
            spans.append((offset, len(text), None))
        return spans


class _Matcher:
    """Leftmost-longest search for literal strings: longer alternatives are tried first."""

    def __init__(self, ids: dict[str, int]):
        self.ids = ids
        alternatives = sorted(ids, key=len, reverse=True)
        self._pattern = regex.compile("|".join(map(regex.escape, alternatives))) if ids else None

    def finditer(self, text: str):
        return self._pattern.finditer(text) if self._pattern else iter(())


def _stands_alone(text: str, start: int, stop: int) -> bool:
    """Example: ("a <tok> b", 2, 7) -> True;  ("a<tok>", 1, 6) -> False"""
    before = start == 0 or not _WORD_CHAR.match(text[start - 1])
    after = stop == len(text) or not _WORD_CHAR.match(text[stop])
    return before and after


def _parse(entry: dict) -> AddedToken:
    try:
        token = AddedToken(
            content=entry["content"], special=bool(entry.get("special", False)),
            single_word=bool(entry.get("single_word", False)), lstrip=bool(entry.get("lstrip", False)),
            rstrip=bool(entry.get("rstrip", False)), normalized=bool(entry.get("normalized", True)),
        )
    except (KeyError, TypeError):
        raise TokenizerError(f"tokenizer.json added token {entry!r:.80} has no 'content'; {CORRUPT}") from None
    if not isinstance(token.content, str):
        raise TokenizerError(f"tokenizer.json added token {entry!r:.80} has a non-text content; {CORRUPT}")
    return token
