"""Geometry of the input embedding table: nearest tokens and analogies by cosine.

In: the (vocab, hidden) table the graph gathers from (dequantized when int8) and the
tokenizer. Out: `Word`s (which ids stand for a word, and its vector) and `Neighbor`s (token,
cosine score), best first. A word of several tokens is the mean of its pieces (`Word.pieces`
says so). Analogy A - B + C (3CosAdd): unit(A) - unit(B) + unit(C), leaving out A, B and C.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import InputError
from edge.tokenizer import Tokenizer

UNKNOWN_TOKENS = ("[UNK]", "<unk>")


@dataclass(frozen=True)
class Word:
    text: str
    ids: tuple[int, ...]
    pieces: tuple[str, ...]  # decoded text of each token; more than one means a mean was used
    vector: np.ndarray  # (hidden,)


@dataclass(frozen=True)
class Neighbor:
    id: int
    text: str  # the token's decoded text, e.g. " queen"
    score: float  # cosine similarity


class Embeddings:
    def __init__(self, table: np.ndarray, tokenizer: Tokenizer):
        self.table = table  # (V, H) float32
        self.tokenizer = tokenizer
        self._norms = np.linalg.norm(table, axis=1)  # (V,)
        # rows a hit can come from: a token the tokenizer knows, with a direction (BERT's [PAD] row is zero)
        self._candidates = np.array([tokenizer.id_to_token(i) is not None for i in range(table.shape[0])]) \
            & (self._norms > 0)  # (V,)
        self._unknown = {i for t in UNKNOWN_TOKENS if (i := tokenizer.token_to_id(t)) is not None}

    def word(self, text: str) -> Word:
        """The tokens for `text`: as a word inside a sentence (" king") when that is one
        token, else as written, else the shorter of the two, averaged."""
        if not text.strip():
            raise InputError("the word is empty: give a word such as king.")
        forms = [text] if text.startswith(" ") else [" " + text, text]
        encodings = [self.tokenizer.encode(f) for f in forms]
        ids = min(encodings, key=len)  # first (space-prefixed) on ties
        if not ids or self._unknown.intersection(ids) or max(ids) >= self.table.shape[0]:
            raise InputError(f"{text!r} is not in this model's vocabulary. Try another word.")
        pieces = tuple(self.tokenizer.token_bytes(i).decode("utf-8", "replace") for i in ids)
        return Word(text, tuple(ids), pieces, self.table[list(ids)].mean(axis=0))

    def nearest(self, vector: np.ndarray, k: int, exclude: set[int]) -> list[Neighbor]:
        """The k tokens whose rows have the highest cosine with `vector`."""
        if k < 1:
            raise InputError(f"{{param}} must be at least 1, got {k}.", param="k")
        scores = self.table @ vector / np.maximum(self._norms * np.linalg.norm(vector), 1e-12)  # (V,)
        scores = np.where(self._candidates, scores, -np.inf)
        scores[list(exclude)] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [Neighbor(int(i), self.tokenizer.token_bytes(int(i)).decode("utf-8", "replace"), float(scores[i]))
                for i in top]

    def neighbors(self, text: str, k: int = 10) -> tuple[Word, list[Neighbor]]:
        word = self.word(text)
        return word, self.nearest(word.vector, k, set(word.ids))

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> tuple[list[Word], list[Neighbor]]:
        """Tokens nearest to a - b + c ("king" - "man" + "woman" -> " queen", ideally)."""
        words = [self.word(t) for t in (a, b, c)]
        unit = [w.vector / max(np.linalg.norm(w.vector), 1e-12) for w in words]
        target = unit[0] - unit[1] + unit[2]  # (H,)
        exclude = {i for w in words for i in w.ids}
        return words, self.nearest(target, k, exclude)
