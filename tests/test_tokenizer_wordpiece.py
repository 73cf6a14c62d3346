"""WordPiece (all-MiniLM-L6-v2's BERT tokenizer) against Hugging Face `tokenizers`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizer_oracle import LINES, assert_decodes_alike, assert_encodes_alike, edited, hf, with_oracle

from edge.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def minilm_json(minilm_dir) -> Path:
    return minilm_dir / "tokenizer.json"


@pytest.fixture(scope="module")
def pair(minilm_json):
    return with_oracle(minilm_json)


def test_encode_matches_oracle_on_corpus(pair):
    assert_encodes_alike(*pair[:2], LINES)


def test_corpus_reaches_unknown_and_overlong_words(pair):
    """The parity corpus really exercises [UNK]: pieces outside the vocab and words over
    max_input_chars_per_word (100), which become one [UNK] whatever they contain."""
    ours, oracle, id_lists = pair
    unk = ours.token_to_id("[UNK]")
    assert sum(unk in ids for ids in id_lists) >= 10
    for word in ("a" * 100, "a" * 101, "hello" * 21):
        assert ours.encode(word) == oracle.encode(word, add_special_tokens=False).ids
    assert ours.encode("a" * 101) == [unk] and ours.encode("a" * 100) != [unk]


@pytest.mark.parametrize("max_length", [8, 128, 256])
def test_encode_for_model_matches_oracle(minilm_json, max_length):
    ours, oracle = load_tokenizer(minilm_json), hf(minilm_json)
    oracle.enable_truncation(max_length)
    bad = []
    for line in LINES:
        expected, got = oracle.encode(line, add_special_tokens=True), ours.encode_for_model(line, max_length)
        want = (expected.ids, expected.type_ids, expected.attention_mask, bool(expected.overflowing))
        if (got.ids, got.type_ids, got.attention_mask, got.truncated) != want:
            bad.append((line, got, want))
    assert not bad, f"{len(bad)} differ, first: {bad[:2]}"


def test_encode_for_model_frames_and_cuts(pair):
    ours, _, _ = pair
    cls, sep = ours.token_to_id("[CLS]"), ours.token_to_id("[SEP]")
    encoding = ours.encode_for_model("one two three four five six seven eight", 5)
    assert encoding.ids[0] == cls and encoding.ids[-1] == sep and len(encoding.ids) == 5 and encoding.truncated
    assert ours.encode_for_model("", 5).ids == [cls, sep]


@pytest.mark.parametrize("skip", [False, True])
def test_decode_matches_oracle(pair, skip):
    ours, oracle, id_lists = pair
    rng = random.Random(0)
    with_specials = [[101, *ids, 102] for ids in id_lists]
    shuffled = [[rng.randrange(ours.vocab_size) for _ in range(rng.randint(1, 20))] for _ in range(2000)]
    assert_decodes_alike(ours, oracle, id_lists + with_specials + shuffled, skip)


def test_vocab_and_special_tokens(pair):
    ours, oracle, _ = pair
    assert ours.vocab_size == oracle.get_vocab_size(with_added_tokens=True)
    for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##ing", "hello"]:
        assert ours.token_to_id(token) == oracle.token_to_id(token)
    for token_id in [0, 100, 101, 1996, ours.vocab_size - 1, ours.vocab_size]:
        assert ours.id_to_token(token_id) == oracle.id_to_token(token_id)


BERT = {
    "type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True
}
VARIANTS = {
    "cased": dict(normalizer={**BERT, "lowercase": False}),
    "cased, strip accents": dict(normalizer={**BERT, "lowercase": False, "strip_accents": True}),
    "lowercase, keep accents": dict(normalizer={**BERT, "strip_accents": False}),
    "raw": dict(normalizer={**BERT, "clean_text": False, "handle_chinese_chars": False}),
    "short words": dict(model={"max_input_chars_per_word": 5}),
    "normalized special": "normalized special",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_component_variants(minilm_json, tmp_path, variant):
    changes = VARIANTS[variant]
    if changes == "normalized special":  # [MASK] matched after lowercasing: "[mask]" in text
        added = [{**t, "normalized": t["content"] == "[MASK]", "single_word": True} for t in _added(minilm_json)]
        changes = dict(added_tokens=added)
    path = edited(minilm_json, tmp_path, **changes)
    ours, oracle = load_tokenizer(path), hf(path)
    lines = LINES[:1500] + ["the [mask] sat", "[MASK]ed", "x [Mask] y"]
    assert_encodes_alike(ours, oracle, lines)
    ids = [oracle.encode(x, add_special_tokens=False).ids for x in lines]
    assert_decodes_alike(ours, oracle, ids, skip=True)


def _added(path: Path) -> list[dict]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))["added_tokens"]
