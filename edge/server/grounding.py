"""Grounded chat over HTTP (`edge serve --index INDEX`): a chat request with `"edge_index": true`
gets sources retrieved for its last user message, put into that message as numbered sources
(as `edge ask` does); the response carries them in an extra `edge_sources` field (with the
non-streamed reply's citations checked: `edge_flagged` lists cited numbers matching none).

All of it sits behind `ground(...)`, called once by the chat route before the job is queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from edge.embeddings.ask import Source, check_citations, grounded_turn
from edge.embeddings.hybrid import hybrid_search
from edge.errors import EdgeError
from edge.generation.model import DEFAULT_MAX_TOKENS
from edge.server.schemas import ApiError, GenerationRequest, from_edge_error

FIELD = "edge_index"


@dataclass(frozen=True)
class Retriever:
    """The served index and the embedding model it was built with (checked at start)."""

    index: object  # SearchIndex
    embedder: object  # EmbeddingModel
    k: int = 4


async def ground(retriever: Retriever | None, body: dict, req: GenerationRequest,
                 lm) -> tuple[GenerationRequest, list[Source] | None]:
    """`req` with sources in its last user message when the body asks for them, and those sources."""
    wanted = body.get(FIELD, False)
    if not isinstance(wanted, bool):
        raise ApiError(400, f"`{FIELD}` must be a boolean.", param=FIELD)
    if not wanted:
        return req, None
    if retriever is None:
        raise ApiError(400, f"`{FIELD}` needs a server started with `edge serve --index INDEX`.", param=FIELD)
    last = req.prompt[-1]
    if last["role"] != "user" or not isinstance(last.get("content"), str) or not last["content"].strip():
        raise ApiError(400, f"`{FIELD}` needs the last message to be a user message with text.", param="messages")
    try:
        return await asyncio.to_thread(_ground, retriever, req, lm)
    except EdgeError as exc:
        raise from_edge_error(exc) from None


def _ground(retriever: Retriever, req: GenerationRequest, lm) -> tuple[GenerationRequest, list[Source]]:
    question = req.prompt[-1]["content"]
    hits = hybrid_search(retriever.index, retriever.embedder, question, retriever.k)
    # Without max_tokens the reply gets what is left; keep a quarter of the context for it.
    reserve = req.options["max_tokens"] or min(DEFAULT_MAX_TOKENS, lm.decoder.context_length // 4)
    messages, sources, _ = grounded_turn(lm, list(req.prompt[:-1]), question, hits, reserve)
    return dataclasses.replace(req, prompt=messages), sources


def fields(sources: list[Source] | None, text: str | None = None) -> dict:
    """The response's extra fields: the prompt's sources; with the whole text, the cited ones."""
    if sources is None:
        return {}
    if text is None:
        return {"edge_sources": [s.as_dict() for s in sources]}
    cited, flagged = check_citations(text, sources)
    return {"edge_sources": [s.as_dict() for s in sources], "edge_cited": [s.number for s in cited],
            "edge_flagged": flagged}
