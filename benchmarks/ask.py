"""Ask your files, measured on this project's own documentation.

    python benchmarks/ask.py --check        # every gold span is at the lines the question set says
    python benchmarks/ask.py [--max-tokens 64] [--limit N] [-o report.md]

The question set (`benchmarks/data/ask_questions.json`): a question, the file and line range
holding its answer, and a gold span copied from those lines. The run indexes README.md and
benchmarks/README.md with the MiniLM bundle (into a temporary folder), then reports:
- retrieval recall@1 and @4, as edge.ask retrieves (cosine + BM25) and by cosine alone: a
  hit is a retrieved chunk whose lines overlap the gold lines;
- the share of answers citing the right source (a cited [n] whose chunk overlaps them) and
  the share containing the gold span (case and whitespace ignored);
- decode tokens/s while answering, with prompt-lookup drafts and without, same questions,
  greedy (so the same answers), and their ratio (the issue's target: >= 1.8x).
Measurements, not tests: the answers of a 135M model are often weak; the figures say how weak.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "data" / "ask_questions.json"
DOCS = ["README.md", "benchmarks/README.md"]
BUNDLES = Path.home() / ".cache" / "edge" / "bundles"


def check(questions: list[dict]) -> list[str]:
    """Problems with the question set: a gold span found nowhere, or in more than one place.
    Each question's `lines` are where its span stands in the file now (the documents change;
    the spans are the fixed part of the set)."""
    problems = []
    for q in questions:
        found = locate(q["file"], q["gold"])
        if len(found) != 1:
            where = "nowhere" if not found else f"{len(found)} times"
            problems.append(f"{q['file']} holds {q['gold']!r} {where} ({q['question']})")
        else:
            q["lines"] = found[0]
    return problems


def locate(file: str, gold: str, window: int = 4) -> list[tuple[int, int]]:
    """The 1-based line spans of `file` that hold `gold` (whitespace and case ignored), each
    the shortest one starting at its first line. Example: a span on line 7 -> [(7, 7)]"""
    lines, want, found = (ROOT / file).read_text(encoding="utf-8").splitlines(), _norm(gold), []
    for start in range(len(lines)):
        for end in range(start, min(start + window, len(lines))):
            if want in _norm(" ".join(lines[start : end + 1])):
                if not any(a <= start + 1 <= b for a, b in found):
                    found.append((start + 1, end + 1))
                break
    return found


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _overlaps(file: str, start: int, end: int, q: dict) -> bool:
    return file == str(ROOT / q["file"]) and start <= q["lines"][1] and end >= q["lines"][0]


def retrieval(index, embedder, questions: list[dict], search) -> dict:
    at = {1: 0, 4: 0}
    for q in questions:
        hits = search(index, embedder, q["question"], 4)
        for k in at:
            at[k] += any(_overlaps(h.file, h.start_line, h.end_line, q) for h in hits[:k])
    return {f"recall@{k}": n / len(questions) for k, n in at.items()}


def answers(index, embedder, lm, questions: list[dict], max_tokens: int) -> dict:
    """Each question answered with drafts and without, one after the other (so a busy machine
    slows both alike); per mode the shares and the decode speed over all answers."""
    import edge

    runs = {d: {"cited": 0, "gold": 0, "tokens": 0, "seconds": 0.0, "drafted": 0, "accepted": 0, "rows": []}
            for d in ("lookup", "none")}
    for q in questions:
        for draft, run in runs.items():
            a = edge.ask(index, q["question"], lm, k=4, embedder=embedder, max_tokens=max_tokens, draft=draft)
            right = any(_overlaps(s.file, s.start_line, s.end_line, q) for s in a.sources)
            has_gold = _norm(q["gold"]) in _norm(a.text)
            run["cited"], run["gold"] = run["cited"] + right, run["gold"] + has_gold
            t = a.timings
            steps = max(t.completion_tokens - 1, 0)  # decode_tok_s counts the tokens after the first
            if t.decode_tok_s > 0:
                run["tokens"], run["seconds"] = run["tokens"] + steps, run["seconds"] + steps / t.decode_tok_s
            run["drafted"], run["accepted"] = run["drafted"] + t.drafted_tokens, run["accepted"] + t.accepted_tokens
            run["rows"].append({"question": q["question"], "answer": a.text, "cited": [s.number for s in a.sources],
                                "flagged": a.flagged, "right_source": right, "gold": has_gold})
    n = len(questions)
    for run in runs.values():
        run.update(cited_right=run["cited"] / n, gold_span=run["gold"] / n,
                   decode_tok_s=run["tokens"] / run["seconds"] if run["seconds"] else 0.0)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the question set's gold spans")
    parser.add_argument("--embedder", type=Path, default=BUNDLES / "all-minilm-l6-v2-int8")
    parser.add_argument("--model", type=Path, default=BUNDLES / "smollm2-135m-instruct-int8")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("-o", "--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))[: args.limit]
    problems = check(questions)
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.check or problems:
        print(f"{len(questions)} questions, {len(problems)} problems")
        return 1 if problems else 0

    import edge
    from edge.embeddings.index import SearchIndex, build_index

    if not args.embedder.exists():
        sys.exit(f"no embedding bundle at {args.embedder}: run `python -m export.default embeddings` once.")
    embedder, lm = edge.load(args.embedder), edge.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = build_index(Path(tmp) / "docs.index", [ROOT / d for d in DOCS], embedder)
        index_s = time.perf_counter() - started
        index = SearchIndex.open(Path(tmp) / "docs.index")
        from edge.embeddings.hybrid import hybrid_search
        from edge.embeddings.search import search

        found = retrieval(index, embedder, questions, hybrid_search)  # what edge.ask uses
        dense = retrieval(index, embedder, questions, search)  # `edge search`: the cosine alone
        runs = answers(index, embedder, lm, questions, args.max_tokens)
    text = _report(questions, report, index_s, found, dense, runs, args)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


def _report(questions, report, index_s, found, dense, runs, args) -> str:
    look, plain = runs["lookup"], runs["none"]
    same = sum(a["answer"] == b["answer"] for a, b in zip(look["rows"], plain["rows"]))
    lines = [
        f"## ask: {len(questions)} questions over {', '.join(DOCS)}",
        f"index: {report.files} files, {report.chunks} chunks, {index_s:.1f} s ({args.embedder.name}); "
        f"model {args.model.name}, greedy, max_tokens {args.max_tokens}, k 4",
        "",
        "| measure | value |",
        "|---|---|",
        f"| retrieval recall@1, hybrid (edge.ask) | {found['recall@1']:.1%} |",
        f"| retrieval recall@4, hybrid (target >= 90%) | {found['recall@4']:.1%} |",
        f"| retrieval recall@1 / @4, cosine alone (edge search) | {dense['recall@1']:.1%} / {dense['recall@4']:.1%} |",
        f"| answers citing the right source | {look['cited_right']:.1%} |",
        f"| answers containing the gold span | {look['gold_span']:.1%} |",
        f"| decode tok/s with lookup drafts | {look['decode_tok_s']:.1f} (accepted {look['accepted']} of "
        f"{look['drafted']} drafted) |",
        f"| decode tok/s without drafts | {plain['decode_tok_s']:.1f} |",
        f"| speed-up (target >= 1.8x) | {look['decode_tok_s'] / plain['decode_tok_s']:.2f}x |",
        f"| answers identical both ways | {same}/{len(questions)} |",
        "",
        "| question | cited | right source | gold span | answer (first 100 characters) |",
        "|---|---|---|---|---|",
    ]
    for row in look["rows"]:
        answer = " ".join(row["answer"].split())[:100].replace("|", "\\|")
        flagged = f" flagged {row['flagged']}" if row["flagged"] else ""
        lines.append(f"| {row['question']} | {row['cited']}{flagged} | {'yes' if row['right_source'] else 'no'} | "
                     f"{'yes' if row['gold'] else 'no'} | {answer} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
