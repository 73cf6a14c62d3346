"""Shared helpers for the tokenizer parity tests: tokenizers trained here, and comparisons
against Hugging Face `tokenizers` (the oracle) that collect every mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

from text_corpus import corpus_lines

LINES = corpus_lines()


def hf(path: Path):
    """The oracle, with the file's own truncation and padding switched off."""
    from tokenizers import Tokenizer

    oracle = Tokenizer.from_file(str(path))
    oracle.no_truncation()
    oracle.no_padding()
    return oracle


def with_oracle(path: Path):
    """(ours, oracle, the oracle's ids of every corpus line) for one tokenizer.json."""
    from edge.tokenizer import load_tokenizer

    oracle = hf(path)
    return load_tokenizer(path), oracle, [oracle.encode(x, add_special_tokens=False).ids for x in LINES]


def assert_encodes_alike(ours, oracle, lines: list[str]) -> None:
    """Every line gets the oracle's ids (no special tokens); all mismatches are collected."""
    pairs = ((line, ours.encode(line), oracle.encode(line, add_special_tokens=False).ids) for line in lines)
    bad = [(line, mine, theirs) for line, mine, theirs in pairs if mine != theirs]
    assert not bad, f"{len(bad)} of {len(lines)} lines differ, first (line, ours, oracle): {bad[:3]}"


def assert_decodes_alike(ours, oracle, id_lists: list[list[int]], skip: bool) -> None:
    pairs = ((ids, ours.decode(ids, skip), oracle.decode(ids, skip_special_tokens=skip)) for ids in id_lists)
    bad = [(ids, mine, theirs) for ids, mine, theirs in pairs if mine != theirs]
    assert not bad, f"{len(bad)} of {len(id_lists)} decodes differ, first (ids, ours, oracle): {bad[:3]}"


def train_byte_level(folder: Path, *, qwen: bool, vocab_size: int = 2000) -> Path:
    """A GPT-2-style (or Qwen2-style: NFC + Split regex + ByteLevel without regex) BPE,
    trained on a corpus disjoint from the test lines, with added tokens of every flavour."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.decoder = decoders.ByteLevel()
    if qwen:
        tok.normalizer = normalizers.NFC()
        split = pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False)
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus_lines(3000, seed=1), trainer)
    tok.add_tokens([
        AddedToken("hello world", single_word=True),  # normalized, matched after the normalizer
        AddedToken("<think>", normalized=False),
        AddedToken("café", normalized=True),  # "cafe\u0301" matches it after NFC (Qwen2-style)
    ])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True), AddedToken("[MASK]", single_word=True)])
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def edited(path: Path, folder: Path, **changes) -> Path:
    """A copy of a tokenizer.json with top-level sections replaced (a model dict is merged)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        config[key] = {**config[key], **value} if key == "model" else value
    out = folder / "tokenizer.json"
    out.write_text(json.dumps(config), encoding="utf-8")
    return out


def train_sentencepiece(folder: Path) -> Path:
    """A Llama-2/TinyLlama-style BPE: "▁" for spaces, byte_fallback with <0xXX> tokens in
    the vocab, a small alphabet (so emoji and most CJK fall back to bytes) and a decoder
    chain Replace -> ByteFallback -> Fuse -> Strip."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
    tok.train_from_iterator(corpus_lines(3000, seed=2), trainer)
    path = folder / "trained.json"
    tok.save(str(path))
    config = json.loads(path.read_text(encoding="utf-8"))
    vocab = config["model"]["vocab"]
    for byte in range(256):  # SentencePiece keeps the 256 byte tokens in the model vocab
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    out = folder / "tokenizer.json"
    out.write_text(json.dumps(config), encoding="utf-8")
    return out
