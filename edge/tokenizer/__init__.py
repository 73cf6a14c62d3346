"""Tokenizers read from a tokenizer.json, token-for-token identical to Hugging Face `tokenizers`.

    tokenizer = load_tokenizer(Path("bundle/tokenizer.json"))
    ids = tokenizer.encode("Hello")                   # no special tokens
    tokenizer.decode(ids)                             # "Hello"
    tokenizer.encode_for_model("Hello", 128)          # [CLS] ... [SEP], truncated (encoders)
    stream = StreamDetokenizer(tokenizer)                 # printable text, token by token

Supported: byte-level BPE (GPT-2, SmolLM2, Qwen2, Llama 3), SentencePiece-style BPE
(Llama 2, TinyLlama: byte_fallback, Metaspace) and WordPiece (BERT, MiniLM). Anything else
is refused at load with a TokenizerError naming the component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edge import jsonfile
from edge.errors import TokenizerError
from edge.tokenizer import decoders, normalizers, pre_tokenizers, processors
from edge.tokenizer import spec as specs
from edge.tokenizer.added import AddedVocabulary
from edge.tokenizer.bpe import BPE
from edge.tokenizer.processors import Encoding
from edge.tokenizer.stream import StreamDetokenizer
from edge.tokenizer.tokenizer import Model, Parts, Tokenizer
from edge.tokenizer.wordpiece import WordPiece

__all__ = ["Encoding", "StreamDetokenizer", "Tokenizer", "load_tokenizer"]

MODELS: dict[str, Callable[[dict], Model]] = {"BPE": BPE, "WordPiece": WordPiece}


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a tokenizer.json describes; TokenizerError if edge cannot reproduce it."""
    config = _read(Path(path))
    try:
        return _build(config)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # A field of the wrong JSON type somewhere the component builders do not check one by one.
        raise TokenizerError(f"{path} is malformed ({exc.__class__.__name__}: {str(exc)[:120]}); "
                             "re-export the model") from None


def _build(config: dict) -> Tokenizer:
    model = specs.build("model", config.get("model"), MODELS)
    normalizer = _optional(normalizers.build, config.get("normalizer"))
    parts = Parts(
        model=model,
        added=AddedVocabulary(config.get("added_tokens") or [], model.vocab, normalizer),
        normalizer=normalizer,
        pre_tokenizer=_optional(pre_tokenizers.build, config.get("pre_tokenizer")),
        decoder=_optional(decoders.build, config.get("decoder")),
        template=processors.build(config.get("post_processor")),
        may_change=decoders.may_change(config.get("decoder")),
        token_bytes=decoders.token_bytes(config.get("decoder")),
    )
    return Tokenizer(parts)


def _read(path: Path) -> dict:
    try:
        config = jsonfile.loads(path.read_bytes())
    except FileNotFoundError:
        raise TokenizerError(f"{path} does not exist; pass the path of a tokenizer.json") from None
    except (OSError, ValueError) as error:
        raise TokenizerError(f"{path} is not a readable tokenizer.json ({error}); re-export the model") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise TokenizerError(f"{path} has no 'model' section, so it is not a tokenizer.json; re-export the model")
    return config


def _optional(build: Callable, spec: dict | None):
    return build(spec) if spec is not None else None
