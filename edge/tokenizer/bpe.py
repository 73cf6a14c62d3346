"""The BPE model: one pre-tokenized word -> ids, by applying ranked merges.

Merges are applied exactly as `tokenizers` does: repeatedly the lowest-rank adjacent pair,
leftmost first, with a heap over a linked list of symbols so long words stay O(n log n).
Results are cached per word, since real text repeats words constantly.
"""

from __future__ import annotations

import heapq

from edge.errors import TokenizerError
from edge.tokenizer import spec as specs

CACHE_SIZE = 100_000
# Merge keys pack the pair (left, right) into one int, left << 32 | right, and values the
# merge, rank << 32 | merged id: plain ints, since tuples would take ~5 MB more for a 49k-merge
# vocabulary, and values order the heap by rank, as `tokenizers` applies merges.
_SHIFT = 32
_LOW = (1 << _SHIFT) - 1


class BPE:
    """Byte-level (GPT-2, SmolLM2, Qwen2) and SentencePiece-style (byte_fallback, unk) BPE."""

    def __init__(self, spec: dict):
        _reject_options(spec)
        self.vocab: dict[str, int] = specs.vocab(spec, "model BPE")
        self.unk_token: str | None = spec.get("unk_token")
        if self.unk_token is not None:
            specs.text(spec, "unk_token", "model BPE")
        self.fuse_unk = bool(spec.get("fuse_unk", False))
        self.byte_fallback = bool(spec.get("byte_fallback", False))
        self.ignore_merges = bool(spec.get("ignore_merges", False))
        merges = specs.field(spec, "merges", "model BPE")
        if not isinstance(merges, list):
            raise TokenizerError(f"tokenizer.json BPE merges must be a list; {specs.CORRUPT}")
        self.merges = self._rank_merges(merges)
        self._cache: dict[str, list[int]] = {}

    def _rank_merges(self, merges: list) -> dict[int, int]:
        """Example: [["a", "b"], "ab c"] -> {id(a) << 32 | id(b): 0 << 32 | id(ab), ...: 1 << 32 | id(abc)}

        A hostile merge surfaces as the exception its shape raises (a wrong count of parts
        in the unpacking, a non-string part in the vocab lookup): checking each merge's
        shape up front doubled a tokenizer's load."""
        ranked, vocab = {}, self.vocab
        for rank, merge in enumerate(merges):
            try:
                if merge.__class__ is str:
                    left, right = merge.split(" ", 1)
                elif merge.__class__ is list:
                    left, right = merge
                    if left.__class__ is not str or right.__class__ is not str:
                        raise TypeError
                else:
                    raise TypeError
                key = vocab[left] << _SHIFT | vocab[right]  # the pair first: a missing part is named before the sum
                ranked[key] = rank << _SHIFT | vocab[left + right]
            except (ValueError, TypeError):
                raise TokenizerError(f"tokenizer.json BPE merge {rank} ({merge!r:.60}) must be \"left right\" or "
                                     f"[left, right]; {specs.CORRUPT}") from None
            except KeyError as missing:
                raise TokenizerError(
                    f"tokenizer.json BPE merge {left!r:.60} + {right!r:.60} uses {missing!s:.60} which is not in the "
                    f"vocab; {specs.CORRUPT}"
                ) from None
        return ranked

    def tokenize(self, word: str) -> list[int]:
        """Example (GPT-2 vocab): "Ġhello" -> [23748]"""
        ids = self._cache.get(word)
        if ids is None:
            if self.ignore_merges and word in self.vocab:
                return [self.vocab[word]]
            ids = self._merge(self._symbols(word))
            if len(self._cache) < CACHE_SIZE:
                self._cache[word] = ids
        return ids

    def _symbols(self, word: str) -> list[int]:
        """One id per character; unknown characters become byte tokens or [UNK] (held back
        and fused as `tokenizers` does), or vanish when the model has neither."""
        ids: list[int] = []
        unk_pending = False
        for char in word:
            if char in self.vocab:
                ids.extend([self._unk_id()] if unk_pending else [])
                ids.append(self.vocab[char])
                unk_pending = False
            elif (byte_ids := self._byte_ids(char)) is not None:
                ids.extend(byte_ids)
            elif self.unk_token is not None:
                ids.extend([self._unk_id()] if unk_pending and not self.fuse_unk else [])
                unk_pending = True
        return ids + [self._unk_id()] if unk_pending else ids

    def _byte_ids(self, char: str) -> list[int] | None:
        """Example: "é" -> [id("<0xC3>"), id("<0xA9>")]; None without byte_fallback or if one is missing."""
        if not self.byte_fallback:
            return None
        names = [f"<0x{b:02X}>" for b in char.encode("utf-8")]
        return [self.vocab[n] for n in names] if all(n in self.vocab for n in names) else None

    def _unk_id(self) -> int:
        if self.unk_token not in self.vocab:
            raise TokenizerError(
                f"tokenizer.json BPE unk_token {self.unk_token!r} is not in the vocab; {specs.CORRUPT}"
            )
        return self.vocab[self.unk_token]

    def _merge(self, ids: list[int]) -> list[int]:
        """Example (merges a+b rank 0, ab+c rank 1): [a, b, c] -> [abc]"""
        merges, n = self.merges, len(ids)
        if n < 2:
            return ids
        following = [*range(1, n), -1]
        preceding = list(range(-1, n - 1))
        alive = [True] * n
        pairs = (merges.get(ids[i] << _SHIFT | ids[i + 1]) for i in range(n - 1))
        heap = [(m, i) for i, m in enumerate(pairs) if m is not None]  # lowest rank, then leftmost
        heapq.heapify(heap)
        while heap:
            merge, pos = heapq.heappop(heap)
            right = following[pos]
            if not alive[pos] or right == -1:
                continue
            if merges.get(ids[pos] << _SHIFT | ids[right]) != merge:
                continue  # a stale entry: this pair changed since it was queued
            new = merge & _LOW
            ids[pos], alive[right] = new, False
            after = following[pos] = following[right]
            if after != -1:
                preceding[after] = pos
                if (m := merges.get(new << _SHIFT | ids[after])) is not None:
                    heapq.heappush(heap, (m, pos))
            before = preceding[pos]
            if before != -1 and (m := merges.get(ids[before] << _SHIFT | new)) is not None:
                heapq.heappush(heap, (m, before))
        return [i for i, keep in zip(ids, alive) if keep]


def _reject_options(spec: dict) -> None:
    """Dropout and subword prefixes/suffixes change the output; edge implements neither."""
    if spec.get("dropout") not in (None, 0, 0.0):
        raise TokenizerError(
            f"tokenizer.json BPE dropout={spec['dropout']} is not supported (edge runs BPE without dropout); "
            "set model.dropout to null"
        )
    for option in ("continuing_subword_prefix", "end_of_word_suffix"):
        if spec.get(option):
            raise specs.unsupported(f"BPE {option}", spec[option], ["''", "null"])
