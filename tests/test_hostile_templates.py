"""Hostile chat templates: each is refused with one ChatTemplateError, in bounded time, and
nothing it asks for is executed. (The sandbox escape tests live in test_chat_template.py.)
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edge
from edge.errors import BundleError, ChatTemplateError, InputError
from edge.generation import chat_template
from edge.generation.chat_template import render
from edge.manifest import MANIFEST_FILE, TokenizerSpec

HI = [{"role": "user", "content": "hi"}]
NESTED = ("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
          "{% endfor %}{% endfor %}{% endfor %}")

HOSTILE = {
    "huge-range": ("{{ range(10**9)|length }}", "Range too big"),
    "recursive-macro": ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "RecursionError|steps"),
    "recursive-loop": ("{% for m in [[1]] recursive %}{{ loop([[m]]) }}{% endfor %}", "RecursionError|steps"),
    "divide-by-zero": ("{{ 1/0 }}", "ZeroDivisionError"),
    "string-times-huge": ("{{ 'x' * 10**10 }}", "repetition"),
    "list-times-huge": ("{{ ([1] * 10**9)|length }}", "repetition"),
    "huge-power": ("{{ 9 ** 999999 }}", "exponent"),
    "include": ("{% include 'secret.txt' %}", "no loader"),
    "extends": ("{% extends 'base.html' %}", "no loader"),
    "import": ("{% import 'macros.j2' as m %}", "no loader"),
    "lone-surrogate": ("\ud800{{ messages[0].content }}", "lone surrogate"),
    "nested-ranges": (NESTED, "steps"),
    "output-flood": ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "output passed"),
    "center-huge": ("{{ 'x'|center(10**10) }}", "filter argument"),
    "indent-huge": ("{{ 'a\nb'|indent(10**9) }}", "filter argument"),
    "undefined-call": ("{{ nothing() }}", "undefined"),
    "type-error": ("{{ messages + 1 }}", "TypeError"),
    "bad-index": ("{{ messages[5]['content'].strip() }}", "no element"),
    "subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    "format-globals": ("{{ '{0.__globals__}'.format(raise_exception) }}", "unsafe|SecurityError"),
    "deep-brackets": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nests too deeply|RecursionError"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_template_is_one_error(case):
    template, reason = HOSTILE[case]
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as caught:
        render(HI, TokenizerSpec(chat_template=template))
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "\n" not in message and "plain text" in message
    assert re.search(reason, message), message


def test_slow_growth_stops_at_the_deadline(monkeypatch):
    """A loop of few steps that each copy a growing string is stopped by the clock."""
    monkeypatch.setattr(chat_template, "MAX_SECONDS", 0.5)
    grow = ('{% set ns = namespace(x="") %}{% for i in range(100000) %}'
            '{% set ns.x = ns.x ~ "abcdefghijklmnop" %}{% endfor %}{{ ns.x|length }}')
    started = time.monotonic()
    with pytest.raises(ChatTemplateError, match="steps or 0.5 s"):
        render(HI, TokenizerSpec(chat_template=grow))
    assert time.monotonic() - started < 10


def test_limits_leave_real_templates_alone():
    """A long conversation through a loop-heavy template still renders."""
    template = "{% for m in messages %}{% for c in m.content %}{{ c }}{% endfor %}|{% endfor %}"
    messages = [{"role": "user", "content": "abc " * 100}] * 500  # 200,000 loop steps
    assert render(messages, TokenizerSpec(chat_template=template)).count("|") == 500


def test_lone_surrogate_in_a_message_is_an_input_error():
    with pytest.raises(InputError, match="lone surrogate U\\+D800"):
        render([{"role": "user", "content": "a\ud800"}], TokenizerSpec(chat_template="{{ messages }}"))


@pytest.fixture
def bundle(tiny_gpt2_bundle_int8, tmp_path) -> Path:
    return shutil.copytree(tiny_gpt2_bundle_int8, tmp_path / "bundle")


def _set_template(bundle: Path, template: str) -> None:
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["tokenizer"]["chat_template"] = template
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["divide-by-zero", "nested-ranges", "include"])
def test_bundle_with_a_broken_template_fails_at_load(bundle, case):
    _set_template(bundle, HOSTILE[case][0])
    with pytest.raises(BundleError, match=f"bundle {bundle}: the chat template failed"):
        edge.load(bundle)


def test_cli_refuses_a_hanging_template_quickly(bundle):
    """Three nested range(100000) loops hung `edge chat`; now one line, exit 1, in seconds."""
    _set_template(bundle, NESTED)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("EDGE_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "edge.cli", "generate", "hi", "-m", str(bundle), "-n", "1"],
                          capture_output=True, text=True, timeout=60, env=env)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1 and err[0].startswith("error: bundle"), done.stderr
    assert "Traceback" not in done.stderr
