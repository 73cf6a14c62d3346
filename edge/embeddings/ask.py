"""Ask your files: a question and an index in; an answer that cites numbered sources out.

    answer = edge.ask("docs.index", "How do I export a model?")
    print(answer.text)                       # "... run `edge export` [1] ..."
    for s in answer.sources:                 # only the sources the answer cited, checked
        print(s.number, s.file, s.lines, s.score)

Retrieval (the embedding bundle the index records; its cosine mixed with BM25 over words,
see hybrid.py) -> a prompt of numbered
sources within the language model's context (the weakest dropped first, the question never
cut) -> generation (any LanguageModel: it knows nothing of indexes) -> citation check: every
[n] in the answer is matched to a source; a number that matches none is flagged, not trusted.
The sources go into the user message, so a chat session can ground every turn afresh
(`GroundedSession`) while its earlier turns stay in the KV cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.embeddings.index import SearchIndex
from edge.embeddings.hybrid import hybrid_search
from edge.embeddings.search import SearchHit
from edge.errors import BundleError, ContextWindowError, InputError, check_positive_int, check_text

DEFAULT_K = 4
DEFAULT_MAX_TOKENS = 256
# After the sources and the question, where a small model heeds it; asking for the sources' own
# words makes answers quote them, which is what prompt-lookup drafts speed up.
INSTRUCTION = ("Answer in one or two sentences, copying the words of the sources, and cite the source you used "
               "like [1].")
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")  # [1], [2, 3]


class StaleIndexWarning(UserWarning):
    """Files changed (or vanished) since the index was built: answers may quote old text."""


@dataclass(frozen=True)
class Source:
    """A retrieved chunk as the prompt numbered it."""

    number: int  # [number] in the prompt; 1 is the best-scoring chunk that fit
    file: str
    start_line: int
    end_line: int
    score: float  # cosine similarity to the question
    text: str

    @property
    def lines(self) -> str:
        return f"{self.start_line}-{self.end_line}"

    def as_dict(self) -> dict:
        return {"number": self.number, "path": self.file, "lines": [self.start_line, self.end_line],
                "score": self.score, "text": self.text}


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]  # cited in the answer and matching a prompt source, in citation order
    retrieved: list[Source]  # every source put in the prompt, best first
    flagged: list[int]  # cited numbers that match no source
    timings: object  # edge.Timings of the generation
    dropped: int = 0  # retrieved chunks left out because they did not fit the context


# --- retrieval ---------------------------------------------------------------------------------


def open_index(index: str | Path | SearchIndex) -> SearchIndex:
    if isinstance(index, SearchIndex):
        return index
    path = Path(index).expanduser()
    if not path.exists():
        raise InputError(f"the index {path} does not exist. Build it with `edge index PATH... -o {path}`.",
                         param="index")
    return SearchIndex.open(path)


def load_embedder(index: SearchIndex, embedder=None):
    """The embedding model of `index`: the bundle it records, or `embedder` (a model or a bundle
    path) if that is the same model; another model is a SearchIndexError."""
    import edge

    if embedder is None:
        if not index.bundle.exists():
            raise BundleError(f"the embedding bundle this index was built with ({index.bundle}) is gone. "
                              "Pass it as the embedder, or rebuild the index with `edge index`.")
        embedder = index.bundle
    model = edge.load(embedder) if isinstance(embedder, (str, Path)) else embedder
    index.check_model(model)
    return model


def stale_files(index: SearchIndex) -> list[str]:
    """Indexed files whose bytes changed, or that are gone, since the index was built."""
    changed = []
    for name, entry in index.meta["files"].items():
        try:
            digest = hashlib.sha256(Path(name).read_bytes()).hexdigest()
        except OSError:
            digest = None
        if digest != entry["sha256"]:
            changed.append(name)
    return changed


def warn_if_stale(index: SearchIndex) -> None:
    changed = stale_files(index)
    if changed:
        warnings.warn(f"{len(changed)} indexed file(s) changed since the index was built ({_short(changed[0])}"
                      f"{', ...' if len(changed) > 1 else ''}); answers may quote old text. Refresh it with "
                      f"`edge index PATH... -o {index.path}`.", StaleIndexWarning, stacklevel=3)


# --- the prompt -------------------------------------------------------------------------------


def check_question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty: ask something.", param="question")
    return check_text(question, "question")


def grounded_turn(lm, history: list[dict], question: str, hits: Sequence[SearchHit],
                  max_tokens: int) -> tuple[list[dict], list[Source], int]:
    """`history` plus one user message holding the numbered sources and the question, as
    many sources as fit the context with `max_tokens` left for the answer (the weakest
    dropped first); the messages, the sources kept and how many were dropped."""
    context = lm.decoder.context_length
    bare = len(lm.encode_chat([*history, {"role": "user", "content": user_message(question, [])}]))
    if bare > context and history:
        raise ContextWindowError(f"the conversation so far and the question take {bare} tokens, more than the "
                                 f"model's context of {context}. Start over (/reset) or ask a shorter question.",
                                 param="question")
    if bare > context:
        raise ContextWindowError(f"the question takes {bare} tokens, more than the model's context of {context}. "
                                 "Ask a shorter question.", param="question")
    if bare + max_tokens > context:
        raise ContextWindowError(f"the question takes {bare} tokens, so {{param}}={max_tokens} does not fit the "
                                 f"context of {context}. Lower {{param}} to {context - bare} or less.",
                                 param="max_tokens")
    kept = list(hits)
    while True:
        sources = [Source(i, h.file, h.start_line, h.end_line, h.score, h.text) for i, h in enumerate(kept, 1)]
        messages = [*history, {"role": "user", "content": user_message(question, sources, _root(hits))}]
        if not kept or len(lm.encode_chat(messages)) + max_tokens <= context:
            return messages, sources, len(hits) - len(kept)
        kept.pop()  # hits are best first: the weakest goes


def user_message(question: str, sources: Sequence[Source], root: str = "") -> str:
    """Example: ("Why?", [Source(1, "/d/a.md", 3, 4, .9, "Because.")], "/d") ->
    "Source [1] (a.md, lines 3-4):\nBecause.\n\nQuestion: Why?\n\n<INSTRUCTION>" """
    blocks = [f"Source [{s.number}] ({os.path.relpath(s.file, root) if root else s.file}, lines {s.lines}):\n"
              f"{s.text.strip()}" for s in sources]
    return "\n\n".join([*blocks, f"Question: {question.strip()}", INSTRUCTION])


def _root(hits: Sequence[SearchHit]) -> str:
    """The folder all hits share, so the prompt names files briefly."""
    folders = {os.path.dirname(h.file) for h in hits}
    return os.path.commonpath(list(folders)) if folders else ""


# --- citations ----------------------------------------------------------------------------------


def check_citations(text: str, sources: Sequence[Source]) -> tuple[list[Source], list[int]]:
    """The sources the text cites (first citation first) and the cited numbers matching none.

    Example: ("A [2]. B [1, 9]. C [2].", sources 1..3) -> ([source 2, source 1], [9])
    """
    by_number = {s.number: s for s in sources}
    cited, flagged = [], []
    for group in _CITATION.findall(text):
        for number in (int(n) for n in group.split(",")):
            if number in by_number and by_number[number] not in cited:
                cited.append(by_number[number])
            elif number not in by_number and number not in flagged:
                flagged.append(number)
    return cited, flagged


# --- asking -----------------------------------------------------------------------------------


@dataclass
class AskStream:
    """The answer's chunks as they come (iterate it); `.answer` once they are all through."""

    chunks: Iterator
    retrieved: list[Source]
    dropped: int
    answer: Answer | None = None
    _parts: list[str] = field(default_factory=list)

    def __iter__(self):
        last = None
        for last in self.chunks:
            self._parts.append(last.text)
            yield last
        text = "".join(self._parts)
        cited, flagged = check_citations(text, self.retrieved)
        self.answer = Answer(text, cited, self.retrieved, flagged, last.timings if last else None, self.dropped)

    def close(self) -> None:
        """Stop generating (a chat session keeps what was streamed)."""
        self.chunks.close()


def ask_stream(index: str | Path | SearchIndex, question: str, model=None, k: int = DEFAULT_K, *,
               embedder=None, max_tokens: int = DEFAULT_MAX_TOKENS, **sampling) -> AskStream:
    """As `ask`, streamed: iterate the result for StreamChunks, then read `.answer`."""
    question = check_question(question)
    check_positive_int(k, "k")
    check_positive_int(max_tokens, "max_tokens")
    found = open_index(index)
    encoder = load_embedder(found, embedder)
    warn_if_stale(found)
    lm = _language_model(model)
    hits = hybrid_search(found, encoder, question, k)
    messages, sources, dropped = grounded_turn(lm, [], question, hits, max_tokens)
    return AskStream(lm.stream_chat(messages, max_tokens=max_tokens, **sampling), sources, dropped)


def ask(index: str | Path | SearchIndex, question: str, model=None, k: int = DEFAULT_K, *, embedder=None,
        max_tokens: int = DEFAULT_MAX_TOKENS, **sampling) -> Answer:
    """Answer `question` from the `k` chunks of `index` closest to it, citing them as [n].
    `model`: a LanguageModel, a bundle path or name (None: the default model); `embedder`:
    the index's embedding model if already loaded (another model is refused). `sampling`:
    the keywords of LanguageModel.stream_chat (greedy, prompt-lookup drafts by default).
    Warns (StaleIndexWarning) when indexed files changed since the index was built."""
    stream = ask_stream(index, question, model, k, embedder=embedder, max_tokens=max_tokens, **sampling)
    for _ in stream:
        pass
    return stream.answer


def _language_model(model):
    import edge

    if model is None or isinstance(model, (str, Path)):
        model = edge.load(model)
    if not getattr(model.manifest, "is_decoder", False):
        raise BundleError(f"{model.manifest.source} is a {model.manifest.model.task} bundle; answering needs a "
                          "text-generation one. Pass another model.")
    return model


class GroundedSession:
    """A chat session whose every user turn carries sources retrieved for it afresh; the
    earlier turns (with their sources) stay in the session's KV cache."""

    def __init__(self, session, index: str | Path | SearchIndex, embedder=None, k: int = DEFAULT_K):
        self.session = session
        self.index = open_index(index)
        self.embedder = load_embedder(self.index, embedder)
        warn_if_stale(self.index)
        self.k = check_positive_int(k, "k")
        self.last: AskStream | None = None

    def send(self, text: str, **sampling) -> AskStream:
        question = check_question(text)
        hits = hybrid_search(self.index, self.embedder, question, self.k)
        max_tokens = sampling.get("max_tokens", self.session.options.get("max_tokens", DEFAULT_MAX_TOKENS))
        messages, sources, dropped = grounded_turn(self.session.model, self.session.messages, question, hits,
                                                   max_tokens)
        self.last = AskStream(self.session.send(messages[-1]["content"], **sampling), sources, dropped)
        return self.last

    def reset(self) -> None:
        self.session.reset()

    # what `edge chat`'s commands read and set (/set, /save, /load): the session's own
    @property
    def options(self) -> dict:
        return self.session.options

    @property
    def system(self) -> str | None:
        return self.session.system

    @system.setter
    def system(self, value: str | None) -> None:
        self.session.system = value

    @property
    def messages(self) -> list:
        return self.session.messages

    @messages.setter
    def messages(self, value: list) -> None:
        self.session.messages = value


def _short(file: str) -> str:
    relative = os.path.relpath(file)
    return file if relative.startswith("..") else relative
