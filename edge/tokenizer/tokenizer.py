"""The Tokenizer: text <-> ids, assembled from the components a tokenizer.json names.

encode: added tokens are cut out -> each remaining stretch is normalized -> pre-tokenized
into words -> each word becomes ids by the model (BPE or WordPiece).
decode: ids -> token strings -> the decoder's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from edge.errors import TokenizerError, check_text
from edge.tokenizer import spec as specs
from edge.tokenizer.added import AddedVocabulary
from edge.tokenizer.decoders import TextDecoder
from edge.tokenizer.normalizers import Normalizer
from edge.tokenizer.pre_tokenizers import PreTokenizer
from edge.tokenizer.processors import Encoding, Template


class Model(Protocol):
    vocab: dict[str, int]

    def tokenize(self, word: str) -> list[int]: ...


@dataclass(frozen=True)
class Parts:
    """The components of one tokenizer.json (see `edge.tokenizer.load_tokenizer`)."""

    model: Model
    added: AddedVocabulary
    normalizer: Normalizer | None
    pre_tokenizer: PreTokenizer | None
    decoder: TextDecoder | None
    template: Template
    may_change: Callable[[str], bool]  # see decoders.may_change
    token_bytes: Callable[[str], bytes]  # see decoders.token_bytes


class Tokenizer:
    """Token-for-token the same as Hugging Face `tokenizers` for the same tokenizer.json."""

    def __init__(self, parts: Parts):
        self._parts = parts
        self._tokens = _token_list({**{i: t for t, i in parts.model.vocab.items()}, **parts.added.text})

    @property
    def vocab_size(self) -> int:
        """Model vocab plus added tokens not already in it."""
        added = self._parts.added
        return len(self._parts.model.vocab) + len(added.ids) - added.overlap

    def token_to_id(self, token: str) -> int | None:
        return self._parts.added.ids.get(token, self._parts.model.vocab.get(token))

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokens[token_id] if 0 <= token_id < len(self._tokens) else None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token contributes to decoded text (b"" for an unknown id).

        Example (SmolLM2): id of "Ġking" -> b" king"
        """
        token = self.id_to_token(token_id)
        return b"" if token is None else self._parts.token_bytes(token)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without the model's special tokens (no [CLS]/[SEP]).

        Example (SmolLM2): "hi<|im_end|>" -> [6004, 2]
        """
        check_text(text)
        parts, ids = self._parts, []
        for piece, token_id, first in parts.added.split(text, parts.normalizer):
            if token_id is not None:
                ids.append(token_id)
                continue
            words = parts.pre_tokenizer((piece, first)) if parts.pre_tokenizer else [(piece, first)]
            for word, _ in words:
                ids += parts.model.tokenize(word)
        return ids

    def encode_for_model(self, text: str, max_length: int) -> Encoding:
        """`encode`, cut to fit `max_length` with the post-processor's specials added around it."""
        return self._parts.template.apply(self.encode(text), max_length)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; unknown ids are skipped.

        Example (SmolLM2): [6004, 2] -> "hi<|im_end|>";  with skip_special_tokens -> "hi"
        """
        tokens = self._token_strings(ids, skip_special_tokens)
        decoder = self._parts.decoder
        return "".join(decoder(tokens)) if decoder else " ".join(tokens)

    def settled(self, ids: list[int], skip_special_tokens: bool = False) -> bool:
        """False while the decoded text of the last token may still change with the next
        ones (a byte-fallback byte); `StreamDetokenizer` waits for True."""
        tokens = self._token_strings(ids, skip_special_tokens)
        return not (tokens and self._parts.may_change(tokens[-1]))

    def _token_strings(self, ids: list[int], skip_special_tokens: bool) -> list[str]:
        special = self._parts.added.special if skip_special_tokens else ()
        tokens = map(self.id_to_token, ids)
        return [t for t in tokens if t is not None and t not in special]


MAX_TOKEN_ID = specs.MAX_TOKEN_ID


def _token_list(tokens: dict[int, str]) -> list[str | None]:
    """id -> token as a list (None for unused ids): a tenth of a dict's memory for SmolLM2's
    49k ids, which are dense, as real vocabularies' are."""
    if not all(isinstance(token_id, int) for token_id in tokens):
        raise TokenizerError(f"tokenizer.json has a token id that is not an integer; {specs.CORRUPT}")
    largest = max(tokens, default=-1)
    if largest > MAX_TOKEN_ID or min(tokens, default=0) < 0:
        raise TokenizerError(f"tokenizer.json has token id {largest if largest > MAX_TOKEN_ID else min(tokens)}, "
                             f"outside 0..{MAX_TOKEN_ID}; {specs.CORRUPT}")
    table: list[str | None] = [None] * (largest + 1)
    for token_id, token in tokens.items():
        table[token_id] = token
    return table
