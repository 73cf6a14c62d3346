"""Text that is not clean UTF-8: lone surrogates through the API, invalid bytes on stdin
and in arguments through the CLI. The API refuses with an InputError naming the parameter;
the CLI reads invalid bytes as U+FFFD (README: "Hostile input") and never shows a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge
from edge.errors import InputError

ROOT = Path(__file__).parents[1]
LONE = ["a\ud800", "\udfff", "ok \udcff end", "\ud83d"]  # the last: half of an emoji's pair


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


@pytest.fixture(scope="module")
def bert(tiny_bert_bundle_fp32):
    return edge.load(tiny_bert_bundle_fp32)


@pytest.mark.parametrize("text", LONE)
def test_lone_surrogates_are_input_errors(lm, bert, text):
    with pytest.raises(InputError, match="lone surrogate") as caught:
        lm.generate(text, raw=True, max_tokens=1)
    assert caught.value.param == "prompt"
    with pytest.raises(InputError, match="lone surrogate") as caught:
        lm.chat([{"role": "user", "content": text}], max_tokens=1)
    assert caught.value.param == "messages"
    with pytest.raises(InputError, match="lone surrogate") as caught:
        bert.embed(["fine", text])
    assert caught.value.param == "texts"
    with pytest.raises(InputError, match="lone surrogate"):
        lm.tokenizer.encode(text)


def test_a_whole_surrogate_pair_is_fine(lm):
    assert lm.tokenizer.decode(lm.tokenizer.encode("\U0001f600")) == "\U0001f600"


def _cli(args: list[str | bytes], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGE_DEBUG", None)
    return subprocess.run([sys.executable.encode(), b"-m", b"edge.cli", *[a if isinstance(a, bytes) else a.encode()
                                                                          for a in args]],
                          input=stdin, capture_output=True, timeout=120, env=env)


@pytest.mark.parametrize("data", [b"hi \xff\n", b"\xc3\x28 broken", b"\xed\xa0\x80 encoded surrogate",
                                  b"caf\xe9 latin-1", b"\xf0\x9f\x98 truncated emoji"])
def test_invalid_utf8_on_stdin(tiny_llama_bundle_fp32, data):
    done = _cli(["generate", "-", "-m", str(tiny_llama_bundle_fp32), "--raw", "-n", "2", "--json"], stdin=data)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["finish_reason"] in ("stop", "length")


def test_invalid_utf8_in_an_argument(tiny_llama_bundle_fp32):
    done = _cli([b"generate", b"hi \xff there", b"-m", str(tiny_llama_bundle_fp32).encode(), b"--raw", b"-n", b"2"])
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr


def test_invalid_utf8_for_embed(tiny_bert_bundle_fp32):
    done = _cli(["embed", "-", "-m", str(tiny_bert_bundle_fp32)], stdin=b"first \xff\nsecond \xc3\x28\n")
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert len(done.stdout.decode().splitlines()) == 2


def test_replacement_is_what_decode_shows():
    from edge.cli.app import from_argv

    assert from_argv(b"hi \xff".decode("utf-8", "surrogateescape")) == "hi \ufffd"
