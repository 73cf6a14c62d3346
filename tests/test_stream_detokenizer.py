"""StreamDetokenizer: what it streams, joined, is exactly `decode(all_ids)`, for any ids."""

from __future__ import annotations

import random
import time

import pytest
from tokenizer_oracle import LINES, train_sentencepiece

from edge.tokenizer import StreamDetokenizer, load_tokenizer
from edge.tokenizer.bytelevel import to_chars


@pytest.fixture(scope="module")
def smollm2(smollm2_tokenizer_json):
    return load_tokenizer(smollm2_tokenizer_json)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_tokenizer(minilm_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """Byte-fallback BPE: a run of <0xXX> tokens decodes as a whole, valid or not."""
    return load_tokenizer(train_sentencepiece(tmp_path_factory.mktemp("sentencepiece")))


@pytest.fixture(scope="module", params=["smollm2", "minilm", "sentencepiece"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def stream(tokenizer, ids: list[int], skip: bool = False) -> list[str]:
    """Every chunk the decoder gives, the flush last."""
    decoder = StreamDetokenizer(tokenizer, skip_special_tokens=skip)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def mismatches(tokenizer, id_lists, skip: bool):
    pairs = ((ids, "".join(stream(tokenizer, ids, skip)), tokenizer.decode(ids, skip)) for ids in id_lists)
    return [(ids, got, want) for ids, got, want in pairs if got != want]


@pytest.mark.parametrize("skip", [False, True])
def test_stream_equals_decode_on_corpus(tokenizer, skip):
    bad = mismatches(tokenizer, [tokenizer.encode(line) for line in LINES], skip)
    assert not bad, f"{len(bad)} differ, first: {bad[:3]}"


@pytest.mark.parametrize("skip", [False, True])
def test_stream_equals_decode_on_random_ids(tokenizer, skip):
    """Random ids are often invalid UTF-8: the stream still ends as decode does."""
    rng = random.Random(0)
    id_lists = [[rng.randrange(tokenizer.vocab_size + 2) for _ in range(rng.randint(1, 30))] for _ in range(2000)]
    bad = mismatches(tokenizer, id_lists, skip)
    assert not bad, f"{len(bad)} differ, first: {bad[:3]}"


@pytest.mark.parametrize("text", ["😀", "a👨‍👩‍👧b", "日本", "é!", "🇫🇷"])
def test_bytes_one_at_a_time_are_held_until_the_character_completes(smollm2, text):
    ids = [smollm2.token_to_id(char) for char in to_chars(text)]
    chunks = stream(smollm2, ids)
    assert "".join(chunks) == text
    assert all("\ufffd" not in chunk for chunk in chunks)
    first_char_bytes = len(text[0].encode())
    assert chunks[: first_char_bytes - 1] == [""] * (first_char_bytes - 1)  # nothing until it is whole


def test_byte_fallback_run_is_held_until_it_ends(sentencepiece):
    """"€" then a stray byte: the whole run turns into U+FFFDs, so "€" must not leak early."""
    byte = [sentencepiece.token_to_id(f"<0x{b:02X}>") for b in "€".encode() + b"\xe2"]
    ids = [*byte, sentencepiece.token_to_id("a")]
    chunks = stream(sentencepiece, ids)
    assert chunks[:4] == ["", "", "", ""] and "".join(chunks) == sentencepiece.decode(ids) == "\ufffd" * 4 + "a"


def test_truncated_character_is_flushed_as_decode_gives_it(smollm2):
    ids = [smollm2.token_to_id(char) for char in to_chars("ok😀")[:-1]]
    chunks = stream(smollm2, ids)
    assert chunks[:2] == ["o", "k"] and chunks[-1] == "\ufffd" == smollm2.decode(ids)[-1]


def test_text_arrives_as_soon_as_it_is_final(smollm2):
    ids = smollm2.encode("Hello world, how are you?")
    chunks = stream(smollm2, ids)
    assert all(chunks[:-1]) and chunks[-1] == ""


def test_cost_per_token_does_not_grow_with_history(smollm2):
    ids = smollm2.encode(" ".join(LINES[:3000]))[:20000]
    decoder = StreamDetokenizer(smollm2)
    start = time.perf_counter()
    text = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert time.perf_counter() - start < 2.0
    assert text == smollm2.decode(ids)
