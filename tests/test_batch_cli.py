"""`edge generate --batch`: every line's text equals `generate` of its prompt with its
options (the oracle: the one-at-a-time API), output survives and resumes an interruption."""

from __future__ import annotations

import json

import pytest

import edge
from edge.cli import main

LINES = [
    {"prompt": "Tell me a story", "id": "a"},
    {"prompt": "Once upon a time", "raw": True, "temperature": 0.9, "seed": 3, "max_tokens": 7},
    {"prompt": "Why is the sky blue? " * 12, "max_tokens": 5},
    {"prompt": "List three fruits", "stop": ["e"], "id": 17},
    {"prompt": "Hi", "temperature": 1.1, "top_k": 20, "seed": 8},
]


@pytest.fixture
def bundle(tiny_llama_bundle_fp32, monkeypatch):
    monkeypatch.setenv("EDGE_MODEL", str(tiny_llama_bundle_fp32))
    return tiny_llama_bundle_fp32


def _expected(bundle) -> dict[int, dict]:
    lm = edge.load(bundle)
    expected = {}
    for index, line in enumerate(LINES):
        options = {"max_tokens": 10, **{k: v for k, v in line.items() if k not in ("prompt", "id")}}
        chunks = list(lm.stream(line["prompt"], **options))
        expected[index] = {"index": index, "id": line.get("id"), "text": "".join(c.text for c in chunks),
                           "finish_reason": chunks[-1].finish_reason,
                           "usage": {"prompt_tokens": chunks[-1].timings.prompt_tokens,
                                     "completion_tokens": chunks[-1].timings.completion_tokens}}
    return expected


def _write(path, lines) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n", encoding="utf-8")


def _read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_lines_equal_generate(bundle, tmp_path, capsys, no_network):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, LINES)
    assert main(["generate", "--batch", str(source), "-o", str(out), "-n", "10", "--parallel", "3"]) == 0
    got = _read(out)
    assert sorted(line["index"] for line in got) == list(range(len(LINES)))
    expected = _expected(bundle)
    assert all(line == expected[line["index"]] for line in got)
    assert "5/5 prompts" in capsys.readouterr().err


@pytest.mark.parametrize("cut", [20, 5])  # after the record's start, and inside it ('{"ind')
def test_resume_skips_finished_lines_and_drops_a_cut_one(bundle, tmp_path, capsys, cut):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, LINES)
    expected = _expected(bundle)
    kept = json.dumps(expected[2]) + "\n" + json.dumps(expected[0]) + "\n"
    out.write_text(kept + json.dumps(expected[4])[:cut], encoding="utf-8")  # interrupted mid-line
    assert main(["generate", "--batch", str(source), "-o", str(out), "-n", "10"]) == 0
    assert out.read_text(encoding="utf-8").startswith(kept)
    got = _read(out)
    assert sorted(line["index"] for line in got) == list(range(len(LINES)))
    assert all(line == expected[line["index"]] for line in got)
    err = capsys.readouterr().err
    assert "2/5 prompts" in err and "5/5 prompts" in err
    assert main(["generate", "--batch", str(source), "-o", str(out)]) == 0  # nothing left: nothing added
    assert len(_read(out)) == len(LINES)


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "hi"}\nnot json\n', "line 2 is not JSON"),
    ('{"text": "hi"}\n', "needs a non-empty \"prompt\""),
    ('{"prompt": "hi", "temprature": 1}\n', "unknown keys ['temprature']"),
])
def test_bad_input_lines(bundle, tmp_path, capsys, content, message):
    source = tmp_path / "in.jsonl"
    source.write_text(content, encoding="utf-8")
    assert main(["generate", "--batch", str(source), "-o", str(tmp_path / "out.jsonl")]) == 1
    assert message in capsys.readouterr().err


def test_batch_needs_an_output_and_no_prompt(bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)  # a terminal: no piped prompt to read
    assert main(["generate", "--batch", str(tmp_path / "in.jsonl")]) == 2
    assert main(["generate", "Hi", "--batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o")]) == 2
    assert main(["generate"]) == 2


def test_resume_leaves_other_lines_alone(bundle, tmp_path):
    """An -o file with someone else's lines, the last without its newline: none is trimmed or
    taken for a record (even one with this job's keys but another id), and ours follow."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, LINES[:2])
    expected = _expected(bundle)
    stranger = json.dumps({**expected[0], "id": "someone else"})
    foreign = "a note\n" + stranger + "\n" + '{"index": 1' + "\n" + "an unfinished thought"
    out.write_text(foreign, encoding="utf-8")
    assert main(["generate", "--batch", str(source), "-o", str(out), "-n", "10"]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith(foreign + "\n")
    got = [json.loads(line) for line in text[len(foreign) + 1 :].splitlines()]
    assert sorted(line["index"] for line in got) == [0, 1] and all(line == expected[line["index"]] for line in got)


@pytest.mark.parametrize("line, message", [
    ({"prompt": "hi", "max_tokens": "10"}, 'line 2: "max_tokens" must be an integer, got "10".'),
    ({"prompt": "hi", "max_tokens": True}, 'line 2: "max_tokens" must be an integer, got true.'),
    ({"prompt": "hi", "temperature": "hot"}, 'line 2: "temperature" must be a number, got "hot".'),
    ({"prompt": "hi", "stop": 5}, 'line 2: "stop" must be a string or an array of strings, got 5.'),
    ({"prompt": "hi", "stop": ["x", None]}, 'line 2: "stop" must be a string or an array of strings'),
    ({"prompt": "hi", "raw": "yes"}, 'line 2: "raw" must be true or false, got "yes".'),
    ({"prompt": "hi", "seed": 1.5}, 'line 2: "seed" must be an integer, got 1.5.'),
    ({"prompt": "hi", "temperature": -1}, 'line 2: "temperature"'),  # the right type, a refused value
    ({"prompt": "hi", "max_tokens": 0}, 'line 2: "max_tokens"'),
    ({"prompt": "hi", "max_tokens": 10**9}, 'line 2: the prompt'),  # beyond a batch slot
])
def test_hostile_line_options(bundle, tmp_path, capsys, line, message):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [LINES[0], line])
    assert main(["generate", "--batch", str(source), "-o", str(out), "-n", "10"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("error: ") and "Traceback" not in "".join(err)
    assert not out.exists()  # checked before the output is opened: no empty file left behind
