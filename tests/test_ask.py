"""Ask your files (edge.ask, `edge ask`, `edge chat --index`, `edge serve --index`) on the tiny
random BERT (embedder) and tiny random Llama (context 256). Oracles: the index's own chunks,
scores recomputed from the stored vectors, token counts from the model's tokenizer, and
scripted model output for citations; the answers of a random model are not judged here
(benchmarks/ask.py measures real ones). Sockets are blocked throughout."""

from __future__ import annotations

import builtins
import http.client
import json
import warnings
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np

import pytest

import edge
import edge.cli.embeddings  # noqa: F401  imported before any test patches edge.cli.app.load_for,
import edge.cli.text  # noqa: F401  which these modules bind at import (else the patch leaks into later tests)
import edge.embeddings.ask as ask_module
from edge.cli import main
from edge.embeddings.ask import (INSTRUCTION, GroundedSession, Source, StaleIndexWarning, check_citations,
                                 grounded_turn, user_message)
from edge.embeddings.index import SearchIndex, build_index
from edge.embeddings.pooling import l2_normalize
from edge.embeddings.hybrid import bm25, hybrid_search, mix, ranked, scaled, stem, terms
from edge.embeddings.search import search
from edge.errors import ContextWindowError, InputError, SearchIndexError
from edge.generation.generate import StreamChunk, Timings

TOPICS = ["cats sleep on warm windows", "the plumber fixed the leaking tap", "install the package then run tests",
          "the ferry leaves the harbour at noon", "bread needs flour water salt and yeast",
          "a comet has a tail of dust and ice"]


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


@pytest.fixture(autouse=True)
def default_model(tiny_llama_bundle_fp32, monkeypatch):
    """The CLI resolves its model before the tests' stand-in replaces loading: a fresh edge
    cache (as in CI) has no default model, so point $EDGE_MODEL at the tiny one."""
    monkeypatch.setenv("EDGE_MODEL", str(tiny_llama_bundle_fp32))


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i, topic in enumerate(TOPICS):  # one chunk per file, ~40 tokens each
        (root / f"note{i}.md").write_text(f"# Note {i}\n\n" + (topic + ". ") * 4 + "\n", encoding="utf-8")
    return root


@pytest.fixture
def index(docs, tmp_path, bert):
    build_index(tmp_path / "idx", [docs], bert, chunk_tokens=64, overlap=0)
    return tmp_path / "idx"


def _entries(index) -> set:
    return {(e.file, e.start_line, e.end_line, e.text) for e in SearchIndex.open(index).entries}


def _scores(index, bert, question) -> dict:
    """Oracle: cosine of the question's vector with every stored row, by chunk text."""
    found = SearchIndex.open(index)
    vector = l2_normalize(bert.embed([question]))[0]
    return {e.text: float(v @ vector) for e, v in zip(found.entries, found.vectors)}


def _scripted(lm, monkeypatch, text: str):
    """The model's reply replaced by `text` (one chunk per word); the prompts it got, listed."""
    prompts = []

    def stream_chat(messages, **options):
        prompts.append(messages)
        words = text.split(" ")
        t = Timings(1, len(words), 0.0, 0.0, 0.0, 0.0)
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield StreamChunk(word + ("" if last else " "), i, "stop" if last else None, t if last else None)

    monkeypatch.setattr(lm, "stream_chat", stream_chat)
    return prompts


def test_prompt_sources_are_real_index_chunks_best_first(index, bert, lm, no_network):
    question = "where does the ferry leave from?"
    answer = edge.ask(index, question, lm, k=3, embedder=bert, max_tokens=8)
    chunks, scores = _entries(index), _scores(index, bert, question)
    assert len(answer.retrieved) == 3 and answer.dropped == 0
    for n, s in enumerate(answer.retrieved, start=1):
        assert s.number == n and (s.file, s.start_line, s.end_line, s.text) in chunks
        assert s.score == pytest.approx(scores[s.text], abs=1e-5)
    fused = hybrid_search(SearchIndex.open(index), bert, question, 3)  # cosine and BM25 by rank
    assert [s.text for s in answer.retrieved] == [h.text for h in fused]
    assert answer.timings.completion_tokens <= 8 and set(answer.sources) <= set(answer.retrieved)


def test_weakest_sources_are_dropped_to_fit_the_context(index, bert, lm, no_network):
    question = "what does bread need?"
    hits = search(SearchIndex.open(index), bert, question, k=6)
    context = lm.decoder.context_length
    max_tokens = 60
    messages, sources, dropped = grounded_turn(lm, [], question, hits, max_tokens)
    assert 0 < len(sources) < 6 and dropped == 6 - len(sources)
    assert [s.text for s in sources] == [h.text for h in hits[: len(sources)]]  # the best kept, in order
    used = len(lm.encode_chat(messages))
    assert used + max_tokens <= context
    one_more = [Source(i, h.file, h.start_line, h.end_line, h.score, h.text)
                for i, h in enumerate(hits[: len(sources) + 1], 1)]
    root = str(SearchIndex.open(index).entries[0].file).rsplit("/", 1)[0]
    bigger = len(lm.encode_chat([{"role": "user", "content": user_message(question, one_more, root)}]))
    assert bigger + max_tokens > context  # not one source more would have fit
    assert messages[-1]["content"].endswith(f"Question: {question}\n\n{INSTRUCTION}")


def test_a_long_question_is_never_cut(index, bert, lm, no_network):
    question = " ".join(["why"] * 150) + "?"
    hits = search(SearchIndex.open(index), bert, question, k=4)
    messages, sources, dropped = grounded_turn(lm, [], question, hits, 8)
    assert messages[-1]["content"].endswith(f"Question: {question}\n\n{INSTRUCTION}") and len(sources) < 4
    too_long = " ".join(["why"] * 400)
    with pytest.raises(ContextWindowError, match="Ask a shorter question") as exc:
        edge.ask(index, too_long, lm, embedder=bert)
    assert exc.value.param == "question"
    with pytest.raises(ContextWindowError) as exc:  # fits alone, but not with the answer's room
        grounded_turn(lm, [], question, hits, 250)
    assert exc.value.param == "max_tokens"


def test_citations_are_checked_and_unknown_numbers_flagged(index, bert, lm, monkeypatch, no_network):
    prompts = _scripted(lm, monkeypatch, "Cats sleep [2]. Taps leak [1, 2] and comets [9].")
    answer = edge.ask(index, "cats?", lm, k=3, embedder=bert, max_tokens=8)
    assert answer.text == "Cats sleep [2]. Taps leak [1, 2] and comets [9]."
    assert [s.number for s in answer.sources] == [2, 1] and answer.flagged == [9]
    assert answer.sources[0] is answer.retrieved[1]
    content = prompts[0][-1]["content"]
    assert content.endswith(INSTRUCTION)
    for s in answer.retrieved:  # every numbered source in the prompt, with its text
        assert f"Source [{s.number}] (note" in content and s.text.strip() in content


def test_bm25_and_mixing_by_hand():
    chunks = [terms("the cat sat"), terms("a dog, a dog"), terms("cats")]  # "the", "a": stop words
    assert chunks == [["cat", "sat"], ["dog", "dog"], ["cat"]]
    got = bm25(chunks, terms("The cat?"))
    idf = np.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # "cat" is in 2 of 3 chunks; mean length 5/3
    want = [idf * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / (5 / 3))), 0.0, idf * 2.2 / (1 + 1.2 * (0.25 + 0.75 / (5 / 3)))]
    np.testing.assert_allclose(got, want)
    # each score to 0..1 over the chunks, then cosine + 0.5 x BM25
    np.testing.assert_allclose(scaled(np.array([2.0, 4, 3])), [0, 1, 0.5])
    np.testing.assert_allclose(scaled(np.array([0.0, 0, 0])), [0, 0, 0])  # no BM25 match: no say
    np.testing.assert_allclose(mix(np.array([0.2, 0.6, 0.4]), np.array([0.0, 1, 4])), [0, 1 + 0.125, 0.5 + 0.5])
    np.testing.assert_allclose(mix(np.array([0.2, 0.6]), np.array([0.0, 0])), [0, 1])


@pytest.mark.parametrize("word, want", [("chunks", "chunk"), ("matches", "match"), ("matched", "match"),
                                        ("lines", "line"), ("boxes", "box"), ("running", "runn"), ("bus", "bus"),
                                        ("used", "used"), ("is", "is"), ("", "")])
def test_light_stemmer(word, want):
    assert stem(word) == want


def test_ties_rank_by_cosine_then_file_and_line_never_by_index_position():
    from edge.embeddings.index import Entry

    entries = [Entry("b.md", 9, 9, ""), Entry("b.md", 3, 3, ""), Entry("a.md", 5, 5, ""), Entry("c.md", 1, 1, "")]
    score, cosine = np.array([1.0, 1, 1, 2]), np.array([0.1, 0.3, 0.3, 0.0])
    assert ranked(score, cosine, entries) == [3, 2, 1, 0]  # best score; cosine .3 tie: a.md first; cosine .1
    order = [2, 0, 3, 1]  # the same chunks stored in another order rank the same
    again = ranked(score[order], cosine[order], [entries[i] for i in order])
    assert [order[i] for i in again] == [3, 2, 1, 0]


def test_hybrid_order_does_not_depend_on_index_order(index, bert):
    """No word of the query is in any chunk (BM25 all 0): the order is the cosine's alone, the
    same whichever order the index stores its chunks in."""
    found = SearchIndex.open(index)
    query = "zzzz qqqq"
    hits = hybrid_search(found, bert, query, 6)
    by_cosine = sorted(_scores(index, bert, query).items(), key=lambda kv: -kv[1])
    assert [h.text for h in hits] == [text for text, _ in by_cosine][:6]
    backwards = list(found.entries)[::-1]
    reversed_index = SimpleNamespace(check_model=found.check_model, all_entries=lambda: backwards, entries=backwards,
                                     vectors=found.vectors[::-1].copy())  # the same rows stored the other way round
    assert [(h.file, h.start_line) for h in hybrid_search(reversed_index, bert, query, 6)] == [
        (h.file, h.start_line) for h in hits]


def test_a_large_index_ranks_the_cosines_best_rows_without_reading_it_whole(index, bert, monkeypatch):
    """Above hybrid.WHOLE_ROWS chunks the pool is index.nearest's CANDIDATES rows: with a pool
    as large as the index the hits equal the whole-index ranking; with a smaller one every hit
    is among the cosine's best CANDIDATES; neither reads all vectors (SearchIndex.vectors)."""
    from edge.embeddings import hybrid

    query = "plants and water"
    whole = hybrid_search(SearchIndex.open(index), bert, query, 4)
    best3 = sorted(_scores(index, bert, query).items(), key=lambda kv: -kv[1])[:3]
    found = SearchIndex.open(index)
    count = len(found.entries)
    monkeypatch.setattr(hybrid, "WHOLE_ROWS", 2)
    monkeypatch.setattr(type(found), "vectors", property(lambda self: pytest.fail("read every vector")))
    monkeypatch.setattr(hybrid, "CANDIDATES", count)
    assert [(h.file, h.start_line) for h in hybrid_search(found, bert, query, 4)] == [(h.file, h.start_line)
                                                                                     for h in whole]
    monkeypatch.setattr(hybrid, "CANDIDATES", 3)
    hits = hybrid_search(found, bert, query, 4)
    assert len(hits) == 3 and {h.text for h in hits} == {text for text, _ in best3}


@pytest.mark.parametrize("text, cited, flagged", [
    ("", [], []), ("no citations", [], []), ("[1][1][1]", [1], []), ("[0] [4] [3]", [3], [0, 4]),
    ("see [ 1 ] and [a] and [3,1]", [3, 1], []), ("[12]", [], [12]),
])
def test_check_citations_examples(text, cited, flagged):
    sources = [Source(n, "f", 1, 2, 0.5, "t") for n in (1, 2, 3)]
    got, bad = check_citations(text, sources)
    assert [s.number for s in got] == cited and bad == flagged


def test_bad_input(index, tmp_path, bert, lm, tiny_bert_bundle_fp32, no_network):
    with pytest.raises(InputError, match="does not exist"):
        edge.ask(tmp_path / "nowhere", "q", lm)
    for empty in ("", "   ", None):
        with pytest.raises(InputError, match="question is empty"):
            edge.ask(index, empty, lm)
    other = edge.load(tiny_bert_bundle_fp32)
    assert other.identity != bert.identity
    with pytest.raises(SearchIndexError, match="another model"):
        edge.ask(index, "q", lm, embedder=other)
    with pytest.raises(InputError):
        edge.ask(index, "q", lm, k=0, embedder=bert)


def test_a_changed_file_warns_naming_edge_index(index, docs, bert, lm, no_network):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edge.ask(index, "cats?", lm, embedder=bert, max_tokens=2)  # fresh: no warning
    (docs / "note1.md").write_text("changed\n")
    with pytest.warns(StaleIndexWarning, match=r"changed since the index was built.*`edge index PATH"):
        edge.ask(index, "cats?", lm, embedder=bert, max_tokens=2)
    (docs / "note1.md").unlink()
    with pytest.warns(StaleIndexWarning, match="note1.md"):
        edge.ask(index, "cats?", lm, embedder=bert, max_tokens=2)


def test_stream_yields_the_answer_then_checks_it(index, bert, lm, no_network):
    stream = edge.ask_stream(index, "tests?", lm, k=2, embedder=bert, max_tokens=6)
    assert stream.answer is None
    text = "".join(c.text for c in stream)
    assert stream.answer.text == text == edge.ask(index, "tests?", lm, k=2, embedder=bert, max_tokens=6).text


# --- the CLI ---------------------------------------------------------------------------------


def _error(capsys, args, code=1) -> str:
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_json_shape(index, bert, tiny_llama_bundle_fp32, lm, monkeypatch, capsys, no_network):
    _scripted(lm, monkeypatch, "Use [1] not [7].")
    monkeypatch.setattr("edge.cli.app.load_for", lambda path, task: lm)
    assert main(["ask", str(index), "how to run tests?", "-k", "2", "--json", "-n", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "sources", "retrieved", "dropped", "flagged", "timings"}
    assert out["answer"] == "Use [1] not [7]." and out["flagged"] == [7]
    chunks = _entries(index)
    (source,) = out["sources"]
    assert set(source) == {"number", "path", "lines", "score", "text"} and source["number"] == 1
    assert (source["path"], *source["lines"], source["text"]) in chunks
    assert [r["number"] for r in out["retrieved"]] == [1, 2]
    scores = _scores(index, bert, "how to run tests?")  # the cosine, recomputed from the stored vectors
    assert all(r["score"] == pytest.approx(scores[t], abs=1e-5) for r in out["retrieved"]
               for t in [next(c[3] for c in chunks if (c[0], c[1], c[2]) == (r["path"], *r["lines"]))])
    assert {"decode_tok_s", "drafted_tokens", "accepted_tokens"} <= set(out["timings"])


def test_cli_streams_then_prints_cited_sources(index, lm, monkeypatch, capsys, no_network):
    _scripted(lm, monkeypatch, "It is so [1].")
    monkeypatch.setattr("edge.cli.app.load_for", lambda path, task: lm)
    assert main(["ask", str(index), "what about cats?", "-k", "2", "-n", "8"]) == 0
    out = capsys.readouterr().out
    first = SearchIndex.open(index)
    assert out.startswith("It is so [1].\n\nsources:\n[1] ")
    line = out.splitlines()[3]
    assert any(f"{e.file}:{e.start_line}-{e.end_line}" in line for e in first.entries)


def test_cli_errors_are_one_line(index, tmp_path, capsys, tiny_llama_bundle_fp32, tiny_bert_bundle_fp32, docs,
                                 no_network):
    assert "does not exist" in _error(capsys, ["ask", str(tmp_path / "nope"), "q"])
    assert "question is empty" in _error(capsys, ["ask", str(index), " "])
    meta = json.loads((index / "index.json").read_text())
    meta["model"]["bundle"] = str(tmp_path / "gone")
    (index / "index.json").write_text(json.dumps(meta))
    assert "is gone" in _error(capsys, ["ask", str(index), "q", "-m", str(tiny_llama_bundle_fp32)])


def test_cli_warns_on_a_stale_index(index, docs, lm, monkeypatch, capsys, no_network):
    monkeypatch.setattr("edge.cli.app.load_for", lambda path, task: lm)
    (docs / "note0.md").write_text("new text\n")
    assert main(["ask", str(index), "cats?", "-n", "2"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 indexed file(s) changed") and "`edge index" in err


def test_chat_with_an_index_retrieves_every_turn(tmp_path, bert, lm, monkeypatch, capsys, no_network):
    for i, topic in enumerate(TOPICS[:2]):  # short notes: two grounded turns fit the tiny context of 256
        (tmp_path / f"short{i}.txt").write_text(topic + "\n")
    build_index(tmp_path / "idx", [tmp_path / "short0.txt", tmp_path / "short1.txt"], bert)
    index = tmp_path / "idx"
    monkeypatch.setattr("edge.cli.text.load_for", lambda path, task, threads=None: lm)
    searched = []
    original = ask_module.hybrid_search

    def spy(found, model, query, k):
        searched.append(query)
        return original(found, model, query, k)

    monkeypatch.setattr(ask_module, "hybrid_search", spy)
    sessions = []
    original_init = GroundedSession.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        sessions.append(self)

    monkeypatch.setattr(GroundedSession, "__init__", init)
    reuses = []
    stream_ids = lm.stream_ids

    def counting(ids, **options):
        reuses.append(options.get("reuse", 0))
        return stream_ids(ids, **options)

    monkeypatch.setattr(lm, "stream_ids", counting)
    lines = iter(["about cats", "and the ferry?", "/exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    assert main(["chat", "--index", str(index), "-n", "4"]) == 0
    assert searched == ["about cats", "and the ferry?"]
    messages = sessions[0].session.messages
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    for turn, query in zip((messages[0], messages[2]), searched):  # each turn's own sources
        want = hybrid_search(sessions[0].index, sessions[0].embedder, query, 4)
        assert all(h.text.strip() in turn["content"] for h in want)
        assert turn["content"].endswith(f"Question: {query}\n\n{INSTRUCTION}")
    # the second turn ran on the first's KV cache: the first prompt was reused, not prefilled again
    # (all but its last token, "\n" after "assistant", which the reply's text may tokenize with)
    first_prompt = lm.encode_chat(messages[:1])
    assert reuses[0] == 0 and reuses[1] >= len(first_prompt) - 1


# --- the server -------------------------------------------------------------------------------


def _post(url: str, body: dict) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_server_grounds_chat_requests_that_ask(index, bert, tiny_llama_bundle_fp32, monkeypatch):
    from edge.server.app import create_app
    from edge.server.grounding import Retriever
    from server_thread import loopback_only, running

    attempts = loopback_only(monkeypatch)
    model = edge.load(tiny_llama_bundle_fp32)
    found = SearchIndex.open(index)
    question = [{"role": "user", "content": "when does the ferry leave?"}]
    body = {"model": "tiny", "messages": question, "max_tokens": 6, "temperature": 0, "edge_index": True}
    with running(create_app({"tiny": model}, retriever=Retriever(found, bert, k=2))) as url:
        status, reply = _post(url, body)
        plain_status, plain = _post(url, {**body, "edge_index": False})
        bad_status, bad = _post(url, {**body, "edge_index": "yes"})
    assert status == 200 and plain_status == 200 and "edge_sources" not in plain
    chunks = _entries(index)
    assert [s["number"] for s in reply["edge_sources"]] == [1, 2]
    assert all((s["path"], *s["lines"], s["text"]) in chunks for s in reply["edge_sources"])
    hits = hybrid_search(found, bert, question[0]["content"], 2)
    messages, _, _ = grounded_turn(model, [], question[0]["content"], hits, 6)
    assert reply["choices"][0]["message"]["content"] == model.chat(messages, max_tokens=6)  # the oracle prompt
    assert "edge_flagged" in reply and "edge_cited" in reply
    assert bad_status == 400 and bad["error"]["param"] == "edge_index"
    with running(create_app({"tiny": model})) as url:
        status, error = _post(url, body)
    assert status == 400 and "--index" in error["error"]["message"]
    assert not attempts
