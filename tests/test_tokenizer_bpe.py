"""Byte-level BPE (SmolLM2, GPT-2-style, Qwen2-style) against Hugging Face `tokenizers`."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from tokenizer_oracle import (
    LINES,
    assert_decodes_alike,
    assert_encodes_alike,
    edited,
    hf,
    train_byte_level,
    train_sentencepiece,
    with_oracle,
)

from edge.errors import TokenizerError
from edge.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def gpt2_json(tmp_path_factory) -> Path:
    return train_byte_level(tmp_path_factory.mktemp("gpt2"), qwen=False)


@pytest.fixture(scope="module")
def qwen2_json(tmp_path_factory) -> Path:
    return train_byte_level(tmp_path_factory.mktemp("qwen2"), qwen=True)


@pytest.fixture(scope="module", params=["smollm2", "gpt2", "qwen2"])
def bpe_json(request) -> Path:
    fixture = {"smollm2": "smollm2_tokenizer_json", "gpt2": "gpt2_json", "qwen2": "qwen2_json"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="module")
def pair(bpe_json):
    return with_oracle(bpe_json)


def test_encode_matches_oracle_on_corpus(pair):
    assert_encodes_alike(*pair[:2], LINES)


@pytest.mark.parametrize("skip", [False, True])
def test_decode_matches_oracle(pair, skip):
    ours, oracle, id_lists = pair
    assert_decodes_alike(ours, oracle, id_lists, skip)


@pytest.mark.parametrize("skip", [False, True])
def test_decode_matches_oracle_on_random_ids(pair, skip):
    """Random ids make invalid UTF-8: U+FFFD must replace the same bytes as Rust's from_utf8_lossy."""
    ours, oracle, _ = pair
    rng = random.Random(0)
    id_lists = [[rng.randrange(ours.vocab_size) for _ in range(rng.randint(1, 20))] for _ in range(3000)]
    assert_decodes_alike(ours, oracle, id_lists, skip)


def test_decode_inverts_encode(pair):
    """Byte-level BPE loses nothing, except bytes missing from the vocab (SmolLM2 has no
    tokens for some control characters), what the normalizer changes (NFC), the spaces an
    lstrip/rstrip added token swallows, and non-ASCII added tokens ByteLevel cannot decode."""
    ours, oracle, id_lists = pair
    lossless = [line for line, ids in zip(LINES, id_lists) if oracle.decode(ids, skip_special_tokens=False) == line]
    assert len(lossless) > 0.9 * len(LINES)
    bad = [line for line in lossless if ours.decode(ours.encode(line)) != line]
    assert not bad, f"{len(bad)} lines do not round-trip, first: {bad[:3]}"


def test_vocab_and_special_tokens(pair):
    ours, oracle, _ = pair
    assert ours.vocab_size == oracle.get_vocab_size(with_added_tokens=True)
    for token in oracle.get_added_tokens_decoder().values():
        assert ours.token_to_id(token.content) == oracle.token_to_id(token.content)
    for token_id in [0, 1, 2, 100, ours.vocab_size - 1, ours.vocab_size]:
        assert ours.id_to_token(token_id) == oracle.id_to_token(token_id)
    assert ours.token_to_id("no such token ~~~") is None and ours.id_to_token(-1) is None


def test_encode_for_model_without_specials(pair):
    """Decoder models' templates add nothing: encode_for_model is encode, truncated."""
    ours, oracle, _ = pair
    oracle.enable_truncation(16)
    for line in LINES[:300]:
        expected = oracle.encode(line, add_special_tokens=True)
        got = ours.encode_for_model(line, 16)
        assert (got.ids, got.type_ids, got.attention_mask) == (expected.ids, expected.type_ids, expected.attention_mask)
        assert got.truncated == bool(expected.overflowing)


def test_fast_enough(smollm2_tokenizer_json):
    ours = load_tokenizer(smollm2_tokenizer_json)
    text = " ".join(LINES[200:1200])[:9000]  # about 2,000+ tokens of varied text
    ours.encode(LINES[0])
    start = time.perf_counter()
    ids = ours.encode(text)
    assert len(ids) > 2000 and time.perf_counter() - start < 0.1


# --- components beyond the three tokenizers, by editing the GPT-2-style file ------------

SPLIT = {"type": "Split", "pattern": {"Regex": r"\s+|\d"}, "invert": False}
BYTES = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
VARIANTS = {
    "prefix space": dict(pre_tokenizer={**BYTES, "add_prefix_space": True, "use_regex": True}),
    "nfkc+lowercase": dict(normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}),
    "nfd+strip accents": dict(
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}
    ),
    "replace+prepend+strip": dict(normalizer={"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"String": "o"}, "content": "0"}, {"type": "Prepend", "prepend": "^"}]}),
    "digits": dict(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {**BYTES, "use_regex": True}]}),
    **{f"split {b}": dict(pre_tokenizer={"type": "Sequence", "pretokenizers": [{**SPLIT, "behavior": b}, BYTES]})
       for b in ["Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"]},
    "split inverted": dict(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {**SPLIT, "pattern": {"String": " "}, "behavior": "Removed", "invert": True}, BYTES]}),
    "whitespace": dict(pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, BYTES]}),
    "whitespace split + punctuation": dict(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Contiguous"}, BYTES]}),
    "ignore merges": dict(model={"ignore_merges": True}),
    "string merges": "string merges",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_component_variants(gpt2_json, tmp_path, variant):
    changes = VARIANTS[variant]
    if changes == "string merges":
        merges = json.loads(gpt2_json.read_text())["model"]["merges"]
        changes = dict(model={"merges": [" ".join(m) for m in merges]})
    path = edited(gpt2_json, tmp_path, **changes)
    assert_encodes_alike(load_tokenizer(path), hf(path), LINES[:1500])


EOT = "<|endoftext|>"
TEMPLATE = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": EOT, "type_id": 1}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {EOT: {"id": EOT, "ids": [0], "tokens": [EOT]}},
}


@pytest.mark.parametrize("processor", [
    {"type": "RobertaProcessing", "sep": [EOT, 0], "cls": [EOT, 0], "trim_offsets": True, "add_prefix_space": False},
    {"type": "BertProcessing", "sep": ["[MASK]", 1], "cls": ["<mask>", 2]},
    {"type": "Sequence", "processors": [BYTES, TEMPLATE]},
])
@pytest.mark.parametrize("max_length", [2, 3, 16])
def test_post_processors(gpt2_json, tmp_path, processor, max_length):
    path = edited(gpt2_json, tmp_path, post_processor=processor)
    ours, oracle = load_tokenizer(path), hf(path)
    oracle.enable_truncation(max_length)
    for line in LINES[:200]:
        expected, got = oracle.encode(line), ours.encode_for_model(line, max_length)
        assert (got.ids, got.type_ids, got.attention_mask) == (expected.ids, expected.type_ids, expected.attention_mask)


def test_max_length_below_specials_is_refused(gpt2_json, tmp_path):
    processor = {"type": "BertProcessing", "sep": ["[MASK]", 1], "cls": ["<mask>", 2]}
    ours = load_tokenizer(edited(gpt2_json, tmp_path, post_processor=processor))
    with pytest.raises(TokenizerError, match="max_length 1 cannot hold .* 2 special tokens"):
        ours.encode_for_model("hi", 1)


# --- what edge refuses, with a message that says so ---------------------------------------

UNSUPPORTED = {
    "dropout": (dict(model={"dropout": 0.1}), "dropout"),
    "subword prefix": (dict(model={"continuing_subword_prefix": "##"}), "continuing_subword_prefix"),
    "model": (dict(model={"type": "Unigram", "vocab": [["a", 0.0]]}), "model 'Unigram'.*edge supports BPE, WordPiece"),
    "pre_tokenizer": (dict(pre_tokenizer={"type": "UnicodeScripts"}), "pre_tokenizer 'UnicodeScripts'.*edge supports"),
    "normalizer": (dict(normalizer={"type": "Precompiled", "precompiled_charsmap": ""}), "normalizer 'Precompiled'"),
    "decoder": (dict(decoder={"type": "CTC"}), "decoder 'CTC'.*edge supports"),
    "post_processor": (dict(post_processor={"type": "Custom"}), "post_processor 'Custom'"),
    "split behavior": (dict(pre_tokenizer={**SPLIT, "behavior": "Sideways"}), "behavior 'Sideways'"),
    "bad regex": (
        dict(pre_tokenizer={**SPLIT, "behavior": "Isolated", "pattern": {"Regex": "(["}}), "does not compile"
    ),
    "nested": (dict(normalizer={"type": "Sequence", "normalizers": [{"type": "Nmt"}]}), "normalizer 'Nmt'"),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported_components_are_refused_at_load(gpt2_json, tmp_path, case):
    changes, message = UNSUPPORTED[case]
    with pytest.raises(TokenizerError, match=message) as error:
        load_tokenizer(edited(gpt2_json, tmp_path, **changes))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not a readable tokenizer.json"),
    ("[1, 2]", "no 'model' section"),
    ('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]}}', "not in the vocab"),
    ('{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1073741824}, "merges": []}}', "token id 1073741824, outside"),
    ('{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}', "token id -1, outside"),
    ('{"model": {"type": "BPE", "vocab": {"a": "0"}, "merges": []}}', "token id that is not an integer"),
])
def test_missing_or_corrupt_file(tmp_path, content, message):
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(path)


# --- SentencePiece-style BPE (Llama 2, TinyLlama): ▁ for spaces, byte fallback, [UNK] --------

METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
SENTENCEPIECE_VARIANTS = {
    "prepend + replace": {},
    "metaspace first": dict(normalizer=None, pre_tokenizer=METASPACE, decoder=METASPACE),
    "metaspace always, split": dict(
        normalizer=None,
        pre_tokenizer={**METASPACE, "prepend_scheme": "always", "split": True},
        decoder={**METASPACE, "prepend_scheme": "always"},
    ),
    "metaspace never": dict(normalizer=None, pre_tokenizer={**METASPACE, "prepend_scheme": "never"},
                            decoder={**METASPACE, "prepend_scheme": "never"}),
    "unk, fused": dict(model={"byte_fallback": False}),
    "unk, not fused": dict(model={"byte_fallback": False, "fuse_unk": False}),
}


@pytest.fixture(scope="module")
def sentencepiece_json(tmp_path_factory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("sentencepiece"))


@pytest.mark.parametrize("variant", SENTENCEPIECE_VARIANTS)
def test_sentencepiece_style_bpe(sentencepiece_json, tmp_path, variant):
    path = edited(sentencepiece_json, tmp_path, **SENTENCEPIECE_VARIANTS[variant])
    ours, oracle = load_tokenizer(path), hf(path)
    lines = LINES[:2000]
    assert_encodes_alike(ours, oracle, lines)
    rng = random.Random(0)  # random ids: runs of byte tokens that are not valid UTF-8
    id_lists = [oracle.encode(x, add_special_tokens=False).ids for x in lines]
    id_lists += [[rng.randrange(ours.vocab_size) for _ in range(rng.randint(1, 20))] for _ in range(500)]
    for skip in (False, True):
        assert_decodes_alike(ours, oracle, id_lists, skip)
