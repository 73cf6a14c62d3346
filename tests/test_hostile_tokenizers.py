"""Hostile tokenizer.json files: wrong shapes, deep nesting, catastrophic regexes.

Each must end in a TokenizerError (one line through the CLI), never a traceback or a hang;
hangs are caught by the test's own clock or a subprocess timeout, not by waiting.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.bundle import sha256
from edge.errors import TokenizerError
from edge.jsonfile import loads, nesting_depth
from edge.manifest import MANIFEST_FILE
from edge.tokenizer import load_tokenizer, splitting

CATASTROPHIC = "(a|aa)+$"
VICTIM = "a" * 45 + "b"  # ~fib(45) paths to try before failing to match


@pytest.fixture(scope="module")
def config(gpt2_style_tokenizer_json) -> dict:
    return json.loads(gpt2_style_tokenizer_json.read_text())


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config))
    return path


def _with(config: dict, dotted: str, value) -> dict:
    """A deep copy of `config` with the field at `dotted` (e.g. "model.merges") set to `value`."""
    config = json.loads(json.dumps(config))
    *parents, last = dotted.split(".")
    target = config
    for key in parents:
        target = target[key]
    target[last] = value
    return config


SHAPES = [
    ("model.merges", 5),
    ("model.merges", [5]),
    ("model.merges", [["a"]]),
    ("model.merges", ["ab"]),
    ("model.merges", [["a", "b", "c"]]),
    ("model.merges", [[1, 2]]),
    ("model.merges", [{"a": "b"}]),
    ("model.vocab", []),
    ("model.vocab", {"a": "0"}),
    ("model.vocab", {"a": -1}),
    ("model.vocab", {"a": True}),
    ("model.vocab", {"a": 1 << 40}),
    ("model", "BPE"),
    ("model.unk_token", 5),
    ("pre_tokenizer", {"type": "Split", "pattern": {"Regex": 5}, "behavior": "Isolated"}),
    ("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}),
    ("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "a"}, "behavior": 5}),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": 5}),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": "ByteLevel"}),
    ("normalizer", {"type": "Sequence", "normalizers": [5]}),
    ("normalizer", {"type": "Replace", "pattern": {"String": "a"}}),
    ("added_tokens", "x"),
    ("added_tokens", [{"content": 5, "id": 1}]),
    ("added_tokens", [5]),
    ("decoder", {"type": "Replace", "pattern": {"String": "a"}, "content": 5}),
]


@pytest.mark.parametrize("field,value", SHAPES, ids=[f"{f}={json.dumps(v)}"[:50] for f, v in SHAPES])
def test_wrong_shapes_are_one_error(config, tmp_path, field, value):
    path = _write(tmp_path, _with(config, field, value))
    try:
        tokenizer = load_tokenizer(path)
    except TokenizerError as exc:
        assert str(path.name) in str(exc) or "tokenizer.json" in str(exc)
        assert "\n" not in str(exc)
        return
    # A few shapes are only used when text reaches them: then encoding must fail cleanly.
    with pytest.raises(TokenizerError):
        tokenizer.decode(tokenizer.encode("a b aa"))


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": '
    + '{"type": "Sequence", "normalizers": [' * 200 + "]}" * 200 + "}",
    '{"model": {"type": "BPE", "vocab": {"a": ' + "1" * 5000 + '}, "merges": []}}',
    "\xff\xfe",
])
def test_hostile_json(tmp_path, text):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(path)


def _depth(value) -> int:
    """The oracle: containers counted by walking the parsed value."""
    if isinstance(value, (dict, list)):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(child) for child in children), default=0)
    return 0


def test_nesting_depth_is_read_off_the_text():
    """jsonfile's fast depth (brackets outside strings) equals a walk over the parsed value,
    on random nestings whose strings hold brackets, quotes and escapes."""
    rng = random.Random(7)

    def make(level):
        if level > 7 or rng.random() < 0.3:
            return rng.choice([1, -2.5e3, None, True, "]", "{[\\", 'a"}', "é[\u2028", ""])
        if rng.random() < 0.5:
            return [make(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", "[", "}", '\\"']) + str(i): make(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(2000):
        value = make(0)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        assert nesting_depth(text) == _depth(value), text
    with pytest.raises(ValueError, match="nested deeper than 64"):
        loads("[" * 65 + "]" * 65)
    assert loads("[" * 64 + "]" * 64)


PATTERNS = {
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CATASTROPHIC}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]},
    "normalizer": {"type": "Replace", "pattern": {"Regex": CATASTROPHIC}, "content": "x"},
}


@pytest.mark.parametrize("where", PATTERNS)
def test_catastrophic_regex_fails_in_time(config, tmp_path, monkeypatch, where):
    """(a|aa)+$ made a 45-character prompt hang for over a minute."""
    monkeypatch.setattr(splitting, "TIMEOUT_S", 0.3)
    tokenizer = load_tokenizer(_write(tmp_path, _with(config, where, PATTERNS[where])))
    assert tokenizer.encode("a b")  # harmless text still encodes
    started = time.monotonic()
    with pytest.raises(TokenizerError, match=r"pattern '\(a\|aa\)\+\$' took too long"):
        tokenizer.encode(VICTIM)
    assert time.monotonic() - started < 10


def test_catastrophic_decoder_regex(config, tmp_path, monkeypatch):
    monkeypatch.setattr(splitting, "TIMEOUT_S", 0.3)
    hostile = _with(config, "decoder", {"type": "Sequence", "decoders": [
        {"type": "ByteLevel"}, {"type": "Replace", "pattern": {"Regex": CATASTROPHIC}, "content": "x"}]})
    tokenizer = load_tokenizer(_write(tmp_path, hostile))
    with pytest.raises(TokenizerError, match="decoder Replace pattern"):
        tokenizer.decode(tokenizer.encode(VICTIM))


def test_limit_scales_with_text(config, tmp_path):
    """A real pattern on a long text is not cut off by the limit (2 s + 2 s per million characters)."""
    split = {"type": "Split", "pattern": {"Regex": r"\s+|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"}, "behavior": "Isolated"}
    tokenizer = load_tokenizer(_write(tmp_path, _with(config, "pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        split, {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]})))
    assert len(tokenizer.encode("word 12, " * 100_000)) > 100_000


@pytest.fixture
def hostile_bundle(tiny_gpt2_bundle_int8, tmp_path) -> Path:
    """A bundle whose tokenizer.json carries a catastrophic pre-tokenizer, checksum updated."""
    bundle = shutil.copytree(tiny_gpt2_bundle_int8, tmp_path / "bundle")
    config = json.loads((bundle / "tokenizer.json").read_text())
    config["pre_tokenizer"] = PATTERNS["pre_tokenizer"]
    (bundle / "tokenizer.json").write_text(json.dumps(config))
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"]["tokenizer.json"] = sha256(bundle / "tokenizer.json")
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    return bundle


def test_cli_does_not_hang_on_a_catastrophic_regex(hostile_bundle):
    """Through the real CLI, with the real limit: one line and exit 1, well within the timeout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("EDGE_DEBUG", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edge.cli", "generate", VICTIM, "-m", str(hostile_bundle),
                           "--raw", "-n", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert time.monotonic() - started < 30
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1 and "took too long" in err[0], done.stderr
