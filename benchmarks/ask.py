"""Ask your files, measured on this project's own documentation.

    python benchmarks/ask.py --check        # every gold span is at the lines the question set says
    python benchmarks/ask.py [--max-tokens 64] [--limit N] [-o report.md]
    python benchmarks/ask.py --retrieval-only   # recall and MRR only, no language model
    python benchmarks/ask.py --bound            # the most prompt-lookup drafts could gain on the answers

The question set (`benchmarks/data/ask_questions.json`): a question, the file and line range
holding its answer, and a gold span copied from those lines. The run indexes README.md and
benchmarks/README.md with the MiniLM bundle (into a temporary folder), then reports:
- retrieval recall@1, @4 and @8 and MRR (of the first hit in the top 8), as edge.ask
  retrieves (cosine + BM25) and by cosine alone: a hit is a retrieved chunk whose lines
  overlap the gold lines. Each on the even-numbered questions (0, 2, ...: where retrieval
  settings are chosen), the odd-numbered ones (held out) and all;
- the share of answers citing the right source (a cited [n] whose chunk overlaps them) and
  the share containing the gold span (case and whitespace ignored);
- decode tokens/s while answering, with prompt-lookup drafts and without, same questions,
  greedy (so the same answers), and their ratio (the issue's target: >= 1.8x).
`--bound` answers every question once without drafts and reports, per CPU cost row of
edge/generation/drafts.py, the decode speed-up a clairvoyant copy-from-context drafter would
reach on those answers (speculative_checks.copy_ceiling_cost, as `speculative.py --bound`):
the ceiling the 1.8x target meets, which depends on how much the answers copy, not on timing.
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


# A fixed split against tuning to the set: retrieval settings are chosen on "even" alone.
HALVES = {"even": slice(0, None, 2), "odd": slice(1, None, 2), "all": slice(None)}
DEPTH = 8  # hits retrieved per question: recall@8 and MRR read this far


def retrieval(index, embedder, questions: list[dict], search) -> dict:
    """{half: {"recall@1", "recall@4", "recall@8", "mrr"}}: shares of questions whose first
    hit ranks within 1, 4, 8, and the mean of 1/rank (0 past DEPTH)."""
    firsts = []  # rank of the first hit (1-based) per question, or None
    for q in questions:
        hits = search(index, embedder, q["question"], DEPTH)
        firsts.append(next((r for r, h in enumerate(hits, 1) if _overlaps(h.file, h.start_line, h.end_line, q)), None))
    result = {}
    for half, part in HALVES.items():
        ranks = firsts[part]
        result[half] = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / len(ranks) for k in (1, 4, 8)}
        result[half]["mrr"] = sum(1 / r for r in ranks if r is not None) / len(ranks)
    return result


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
    parser.add_argument("--retrieval-only", action="store_true", help="measure retrieval alone (no language model)")
    parser.add_argument("--bound", action="store_true",
                        help="only the most copy-from-context drafts could gain on the answers, per cost row")
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
    embedder = edge.load(args.embedder)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = build_index(Path(tmp) / "docs.index", [ROOT / d for d in DOCS], embedder)
        index_s = time.perf_counter() - started
        index = SearchIndex.open(Path(tmp) / "docs.index")
        from edge.embeddings.hybrid import hybrid_search
        from edge.embeddings.search import search

        found = retrieval(index, embedder, questions, hybrid_search)  # what edge.ask uses
        dense = retrieval(index, embedder, questions, search)  # `edge search`: the cosine alone
        if args.bound:
            print(ceiling(index, embedder, edge.load(args.model), questions, args.max_tokens))
            return 0
        runs = None if args.retrieval_only else answers(index, embedder, edge.load(args.model), questions,
                                                        args.max_tokens)
    text = _report(questions, report, index_s, found, dense, runs, args)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


def ceiling(index, embedder, lm, questions: list[dict], max_tokens: int) -> str:
    """Each question answered once, greedy without drafts, as edge.ask retrieves and prompts;
    then, per cost row, all answers' decode tokens (after the first) over the least cost of
    producing them with clairvoyant copy-from-context drafts: the decode speed-up no prompt-
    lookup drafter can beat on these answers."""
    from edge.embeddings.ask import grounded_turn
    from edge.embeddings.hybrid import hybrid_search
    from edge.generation.drafts import COSTS, MAX_DRAFT, call_costs
    from speculative_checks import copy_ceiling_cost

    rows = {f"this CPU ({lm.decoder.quantization})": call_costs(lm.decoder.quantization), **COSTS}
    tokens, costs = 0, dict.fromkeys(rows, 0.0)
    for q in questions:
        messages, _, _ = grounded_turn(lm, [], q["question"], hybrid_search(index, embedder, q["question"], 4),
                                       max_tokens)
        prompt = lm.encode_chat(messages)
        out = [chunk.token for chunk in lm.stream_chat(messages, max_tokens=max_tokens, draft="none")]
        tokens += len(out) - 1  # decode tokens: after the first, which the prompt's call gives
        for name, row in rows.items():
            costs[name] += copy_ceiling_cost(prompt, out, row, MAX_DRAFT) - 1
    lines = [f"{len(questions)} answers, {tokens} decode tokens, greedy, max_tokens {max_tokens}, k 4", "",
             "| cost row (drafts.py) | clairvoyant copy: decode speed-up over one-token steps (target 1.8x) |",
             "|---|---|"]
    lines += [f"| {name} | {tokens / cost:.2f}x |" for name, cost in costs.items()]
    return "\n".join(lines)


def _report(questions, report, index_s, found, dense, runs, args) -> str:
    lines = [
        f"## ask: {len(questions)} questions over {', '.join(DOCS)}",
        f"index: {report.files} files, {report.chunks} chunks, {index_s:.1f} s ({args.embedder.name})",
        "",
        "| retrieval | questions | recall@1 | recall@4 (target >= 90%) | recall@8 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in (("hybrid (edge.ask)", found), ("cosine alone (edge search)", dense)):
        for half, part in HALVES.items():
            r = result[half]
            lines.append(f"| {name} | {half} ({len(questions[part])}) | {r['recall@1']:.1%} | {r['recall@4']:.1%} | "
                         f"{r['recall@8']:.1%} | {r['mrr']:.3f} |")
    return "\n".join(lines) + "\n" + ("" if runs is None else "\n" + _answers_report(questions, runs, args))


def _answers_report(questions, runs, args) -> str:
    look, plain = runs["lookup"], runs["none"]
    same = sum(a["answer"] == b["answer"] for a, b in zip(look["rows"], plain["rows"]))
    lines = [
        f"model {args.model.name}, greedy, max_tokens {args.max_tokens}, k 4",
        "",
        "| measure | value |",
        "|---|---|",
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
