"""The WordPiece model (BERT): one pre-tokenized word -> ids, greedy longest match first.

A word that cannot be covered by the vocab, or is longer than max_input_chars_per_word,
becomes a single [UNK].
"""

from __future__ import annotations

from edge.errors import TokenizerError
from edge.tokenizer import spec as specs

CACHE_SIZE = 100_000


class WordPiece:
    def __init__(self, spec: dict):
        self.vocab: dict[str, int] = specs.vocab(spec, "model WordPiece")
        self.prefix: str = spec.get("continuing_subword_prefix", "##")
        self.max_chars: int = spec.get("max_input_chars_per_word", 100)
        unk_token = spec.get("unk_token", "[UNK]")
        if unk_token not in self.vocab:
            raise TokenizerError(
                f"tokenizer.json WordPiece unk_token {unk_token!r} is not in the vocab; {specs.CORRUPT}"
            )
        self.unk_id = self.vocab[unk_token]
        self._cache: dict[str, list[int]] = {}

    def tokenize(self, word: str) -> list[int]:
        """Example (BERT vocab): "unaffable" -> [id("un"), id("##aff"), id("##able")]"""
        ids = self._cache.get(word)
        if ids is None:
            ids = self._pieces(word) if len(word) <= self.max_chars else [self.unk_id]
            if len(self._cache) < CACHE_SIZE:
                self._cache[word] = ids
        return ids

    def _pieces(self, word: str) -> list[int]:
        ids, start = [], 0
        while start < len(word):
            prefix = self.prefix if start else ""
            for end in range(len(word), start, -1):
                piece_id = self.vocab.get(prefix + word[start:end])
                if piece_id is not None:
                    ids.append(piece_id)
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids
