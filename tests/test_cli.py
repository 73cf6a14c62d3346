"""The CLI over the API: same text, one-line errors with exit codes, chat REPL behaviour."""

from __future__ import annotations

import builtins
import json

import pytest

import edge
from edge.cli import main


@pytest.fixture
def bundle(tiny_llama_bundle_int8, monkeypatch):
    monkeypatch.setenv("EDGE_MODEL", str(tiny_llama_bundle_int8))
    return tiny_llama_bundle_int8


def _error(capsys, args, code=1) -> str:
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_generate_streams_what_the_api_returns(bundle, capsys, no_network):
    assert main(["generate", "Tell me a story", "--max-tokens", "12"]) == 0
    want = edge.load(bundle).generate("Tell me a story", max_tokens=12)
    assert capsys.readouterr().out == want + "\n"


def test_generate_json(bundle, capsys):
    assert main(["generate", "Hi", "--raw", "--json", "-n", "8", "--temperature", "0.8", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"text", "token_ids", "finish_reason", "prompt_tokens", "completion_tokens", "timings"}
    assert set(out["timings"]) == {"load_s", "ttft_s", "prefill_tok_s", "decode_tok_s", "decode_calls",
                                   "drafted_tokens", "accepted_tokens"}
    lm = edge.load(bundle)
    assert out["text"] == lm.generate("Hi", raw=True, max_tokens=8, temperature=0.8, seed=3)
    assert out["prompt_tokens"] == len(lm.encode_prompt("Hi", raw=True))
    assert out["completion_tokens"] == len(out["token_ids"]) and out["finish_reason"] in ("stop", "length")


def test_generate_reads_stdin(bundle, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there"))
    assert main(["generate", "-", "-n", "5"]) == 0
    assert capsys.readouterr().out == edge.load(bundle).generate("Hello there", max_tokens=5) + "\n"


@pytest.mark.parametrize("args, message", [
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--temperature", "-1"], "--temperature"),
    (["--top-k", "-2"], "--top-k"),
    (["--min-p", "1"], "--min-p"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--max-tokens", "1000"], "context window"),
])
def test_bad_generation_options(bundle, capsys, args, message):
    assert message in _error(capsys, ["generate", "Hi", *args])


def test_empty_prompt_and_usage_errors(bundle, capsys):
    assert "prompt is empty" in _error(capsys, ["generate", "  "])
    assert "--max-tokens" in _error(capsys, ["generate", "Hi", "--max-tokens", "many"], code=2)


def test_no_bundle_anywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_MODEL", raising=False)
    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    assert "make demo" in _error(capsys, ["generate", "Hi"])


def test_eval_matches_the_api(bundle, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    assert main(["eval", str(text), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["perplexity"] == pytest.approx(edge.load(bundle).perplexity(text.read_text()))
    (tmp_path / "empty.txt").write_text("")
    assert "at least two tokens" in _error(capsys, ["eval", str(tmp_path / "empty.txt")])
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    assert "UTF-8" in _error(capsys, ["eval", str(tmp_path / "bin.txt")])


def _feed_lines(monkeypatch, *lines):
    """input() answers with these lines (KeyboardInterrupt items are raised), then EOF."""
    queue = list(lines)

    def fake_input(prompt=""):
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(builtins, "input", fake_input)


def test_chat_repl_turns_reset_and_exit(bundle, capsys, monkeypatch):
    _feed_lines(monkeypatch, "Hello", KeyboardInterrupt, "/reset", "Hello", "/exit", "never read")
    assert main(["chat", "-n", "6"]) == 0
    out, err = capsys.readouterr()
    first = edge.load(bundle).chat([{"role": "user", "content": "Hello"}], max_tokens=6)
    assert out == f"{first}\n{first}\n"  # after /reset the same question gets the same reply
    assert "(use /exit or Ctrl-D to quit)" in err and "(conversation cleared)" in err


def test_ctrl_c_stops_a_reply_and_keeps_the_session(bundle, capsys, monkeypatch):
    from edge.generation.chat import ChatSession

    original = ChatSession.send
    calls = []

    def send(self, text, **kw):
        reply = original(self, text, **kw)  # settles the previous reply first
        calls.append((text, [m["role"] for m in self.messages]))  # the history this turn builds on
        if len(calls) == 1:  # the first reply is interrupted after its first chunk
            def interrupted():
                yield next(reply)
                raise KeyboardInterrupt
            return interrupted()
        return reply

    monkeypatch.setattr(ChatSession, "send", send)
    _feed_lines(monkeypatch, "Hello", "And then?")
    assert main(["chat", "-n", "6"]) == 0
    out, err = capsys.readouterr()
    assert "(stopped)" in err
    # the interrupted turn stays in the history (its partial reply was shown), and the next turn runs
    assert calls == [("Hello", []), ("And then?", ["user", "assistant"])]
    assert out.count("\n") >= 2


def test_bench_json(bundle, capsys):
    assert main(["bench", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["decode_tok_s"] > 0 and figures["prefill_tok_s_long"] > 0 and 0 <= figures["python_overhead"] < 1
    assert figures["long_prompt"] == 255 and figures["long_context"] == 256 - 32 - 1  # capped by the context


# --- familiar flags and input (llama.cpp's and llm's spellings) ----------------------------


def test_temp_alias_and_t_is_threads(bundle, capsys):
    assert main(["generate", "Hi", "--raw", "-n", "8", "--temp", "0.8", "--seed", "3", "-t", "1"]) == 0
    want = edge.load(bundle).generate("Hi", raw=True, max_tokens=8, temperature=0.8, seed=3)
    assert capsys.readouterr().out == want + "\n"
    assert "--threads" in _error(capsys, ["generate", "Hi", "-t", "0.7"], code=2)  # not a temperature


def test_system_prompt_goes_through_the_template(bundle, capsys):
    assert main(["generate", "-s", "Be brief.", "Hello", "-n", "8"]) == 0
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert capsys.readouterr().out == edge.load(bundle).chat(messages, max_tokens=8) + "\n"
    assert "--raw" in _error(capsys, ["generate", "-s", "Be brief.", "Hello", "--raw"], code=2)


def test_system_prompt_needs_a_chat_template(tiny_gpt2_bundle_int8, capsys):
    assert "no chat template" in _error(capsys, ["generate", "-m", str(tiny_gpt2_bundle_int8), "-s", "x", "Hi"])


def test_prompt_from_a_file_and_from_a_pipe(bundle, capsys, monkeypatch, tmp_path):
    import io

    want = edge.load(bundle).generate("Hello there", max_tokens=5) + "\n"
    (tmp_path / "p.txt").write_text("Hello there", encoding="utf-8")
    assert main(["generate", "-f", str(tmp_path / "p.txt"), "-n", "5"]) == 0
    assert capsys.readouterr().out == want
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there"))  # not a terminal: read without `-`
    assert main(["generate", "-n", "5"]) == 0
    assert capsys.readouterr().out == want
    assert "not both" in _error(capsys, ["generate", "Hi", "-f", str(tmp_path / "p.txt")], code=2)
    assert "cannot read" in _error(capsys, ["generate", "-f", str(tmp_path / "missing.txt")])


def test_no_prompt_on_a_terminal(bundle, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    assert "no prompt" in _error(capsys, ["generate"], code=2)


def test_invalid_utf8_input_is_replaced(tmp_path, monkeypatch):
    import io

    from edge.cli.app import read_input

    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok")
    assert read_input(tmp_path / "bad.txt") == "caf\ufffd ok"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff hi")))
    assert read_input() == "\ufffd hi"


# --- chat commands: /help, /set, multi-line input, /save and /load -------------------------


def test_chat_help_set_and_multiline(bundle, capsys, monkeypatch):
    _feed_lines(monkeypatch, "/help", "/set temperature 0.8", "/set seed 4", "/set top_p 2", "/set top_k many",
                "/set", "/nope", '"""', "Hello", "there", '"""')
    assert main(["chat", "-n", "6"]) == 0
    out, err = capsys.readouterr()
    assert "/set NAME VALUE" in err and "/save FILE" in err and '"""' in err
    assert "top_p must be in (0, 1]" in err and "top_k must be an integer" in err  # refused, session goes on
    assert "  temperature 0.8" in err and "  seed 4" in err and "  min_p (model default)" in err
    assert "unknown command /nope" in err
    want = edge.load(bundle).chat([{"role": "user", "content": "Hello\nthere"}], max_tokens=6, temperature=0.8,
                                  seed=4)
    assert out == want + "\n"


def test_chat_save_and_load(bundle, capsys, monkeypatch, tmp_path):
    saved, bad = tmp_path / "talk.json", tmp_path / "bad.json"
    _feed_lines(monkeypatch, "Hello", f"/save {saved}")
    assert main(["chat", "-n", "6", "-s", "Be brief."]) == 0
    first = capsys.readouterr().out[:-1]  # the reply, then print()'s newline
    data = json.loads(saved.read_text())
    assert data == {"system": "Be brief.", "messages": [{"role": "user", "content": "Hello"},
                                                         {"role": "assistant", "content": first}]}
    bad.write_text('{"messages": [{"role": "wizard", "content": 1}]}')
    _feed_lines(monkeypatch, f"/load {bad}", f"/load {tmp_path / 'missing.json'}", f"/load {saved}", "And then?")
    assert main(["chat", "-n", "6"]) == 0  # no system prompt given: the file brings it
    out, err = capsys.readouterr()
    assert "is not a saved conversation" in err and "cannot read" in err and "(loaded 2 messages" in err
    want = edge.load(bundle).chat([{"role": "system", "content": "Be brief."}, *data["messages"],
                                   {"role": "user", "content": "And then?"}], max_tokens=6)
    assert out == want + "\n"
