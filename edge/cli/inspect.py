"""`edge inspect ...`: what the model sees: tokens, embeddings, positions, attention.

Each command prints a table (or `--json`) and, with `--png FILE` and the `viz` extra, a
picture. The heavy lifting is in edge.inspect; this layer only loads, formats and prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from edge.cli.app import ModelOption, app, resolve_bundle
from edge.errors import require_extra

inspect_app = typer.Typer(help="Show what the model sees: tokens, embedding neighbours, positions, attention.\n\n"
                          "Example: edge inspect tokens \"Tokyo 東京\"",
                          no_args_is_help=True)
app.add_typer(inspect_app, name="inspect")

Json = typer.Option(False, "--json", help="Print one JSON object.")
Png = typer.Option(None, "--png", metavar="FILE", help="Also draw a picture into this PNG file (needs the `viz` extra).")


def _inspector(model: Path | None):
    from edge.inspect.inspector import Inspector

    return Inspector(resolve_bundle(model))


def _print_json(data: dict) -> None:
    print(json.dumps(data, ensure_ascii=False))


def _need_viz(png: Path | None) -> None:
    """Refuse --png before any work when the `viz` extra is missing."""
    if png is not None:
        require_extra("edge inspect --png", "viz", "matplotlib")


def _draw(png: Path | None, draw) -> None:
    """Write the picture if asked; without matplotlib say how to get it (the text output stands)."""
    if png is None:
        return
    from edge.inspect import plots

    print(f"wrote {draw(plots, png)}", file=sys.stderr)


@inspect_app.command("tokens")
def tokens_cmd(text: str = typer.Argument(..., metavar="TEXT", help="The text to tokenize."), model: Path = ModelOption,
               as_json: bool = Json):
    """One row per token: position, id, the text piece, its bytes.

    Example: edge inspect tokens "Tokyo 東京"
    """
    rows = _inspector(model).tokens(text)
    if as_json:
        _print_json({"text": text, "tokens": [r.to_dict() for r in rows]})
        return
    print(f"{'pos':>4} {'id':>7}  {'token':<18} {'text':<14} bytes")
    for r in rows:
        print(f"{r.position:>4} {r.id:>7}  {r.token!r:<18} {r.text!r:<14} {r.bytes.hex(' ')}")


def _word_note(word) -> str:
    if len(word.ids) == 1:
        return f"{word.text!r} = token {word.pieces[0]!r} (id {word.ids[0]})"
    return f"{word.text!r} is {len(word.ids)} tokens {list(word.pieces)}: using the mean of their vectors"


def _word_json(word) -> dict:
    return {"text": word.text, "ids": list(word.ids), "pieces": list(word.pieces), "mean_of_pieces": len(word.ids) > 1}


def _print_hits(hits) -> None:
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>4}  {hit.score:.4f}  {hit.text!r:<20} id {hit.id}")


@inspect_app.command("neighbors")
def neighbors_cmd(word: str = typer.Argument(..., metavar="WORD", help="A word, e.g. king."), model: Path = ModelOption,
                  k: int = typer.Option(10, "-k", metavar="K", help="How many neighbours."), as_json: bool = Json):
    """Nearest tokens by cosine in the model's input embedding table.

    Example: edge inspect neighbors king -k 10
    """
    found, hits = _inspector(model).neighbors(word, k)
    if as_json:
        _print_json({"word": _word_json(found), "neighbors": [vars(h) for h in hits]})
        return
    print(f"{_word_note(found)}; nearest tokens by cosine in the input embedding table:")
    _print_hits(hits)


@inspect_app.command("analogy")
def analogy_cmd(a: str = typer.Argument(..., metavar="A", help="A, e.g. king"), b: str = typer.Argument(..., metavar="B", help="B, e.g. man"),
                c: str = typer.Argument(..., metavar="C", help="C, e.g. woman"), model: Path = ModelOption,
                k: int = typer.Option(5, "-k", metavar="K", help="How many tokens."), as_json: bool = Json):
    """Tokens nearest to A - B + C (unit vectors), leaving out A, B and C.

    Example: edge inspect analogy king man woman -k 5
    """
    words, hits = _inspector(model).analogy(a, b, c, k)
    if as_json:
        _print_json({"a": _word_json(words[0]), "b": _word_json(words[1]), "c": _word_json(words[2]),
                     "results": [vars(h) for h in hits]})
        return
    for word in words:
        if len(word.ids) > 1:
            print(f"note: {_word_note(word)}")
    print(f"{a} - {b} + {c} ~ (cosine, leaving out the three words):")
    _print_hits(hits)


@inspect_app.command("positions")
def positions_cmd(model: Path = ModelOption, n: int = typer.Option(64, "-n", metavar="N", help="How many positions."),
                  png: Path = Png, as_json: bool = Json):
    """The positional encoding (learned, sinusoidal or rotary) and similarity by distance.

    Example: edge inspect positions -n 64 --png pos.png
    """
    _need_viz(png)
    found = _inspector(model).positions(n)
    if as_json:
        _print_json({"kind": found.kind, "base": found.base, "shape": list(found.table.shape),
                     "similarity_by_distance": found.similarity.tolist(), "table": found.table.tolist()})
    else:
        _print_positions(found)
    _draw(png, lambda plots, path: plots.positions_png(found, path))


def _print_positions(found) -> None:
    import numpy as np

    n, dims = found.table.shape
    if found.kind == "rotary":
        print(f"rotary positions (base {found.base:g}): angle = position x theta_i for {dims} frequencies; "
              f"wavelengths {2 * np.pi / found.table[1, 0]:.1f} .. {2 * np.pi / found.table[1, -1]:.0f} tokens")
    else:
        print(f"{found.kind} positions: {n} x {dims} table")
    print("similarity of two positions by distance:")
    distances = sorted({0, 1, 2, 4, 8, 16, 32, 64, 128, 256, n - 1} & set(range(n)))
    for d in distances:
        print(f"  d={d:<4} {found.similarity[d]: .4f}")


@inspect_app.command("attention")
def attention_cmd(text: str = typer.Argument(..., metavar="TEXT", help="The prompt (plain text, no chat template)."),
                  model: Path = ModelOption,
                  layer: int = typer.Option(None, "--layer", metavar="L", help="One layer (0-based); default: every layer."),
                  head: int = typer.Option(None, "--head", metavar="H", help="One head (0-based); default: mean over heads."),
                  png: Path = Png, as_json: bool = Json):
    """Attention weights over the prompt, and each token's three most-attended tokens.

    Example: edge inspect attention "The cat sat on the mat" --layer 0
    """
    from edge.inspect.attention import select, top_sources

    _need_viz(png)
    inspector = _inspector(model)
    rows, weights = inspector.attention(text)
    view = select(weights, layer, head)
    top = top_sources(view.summary, inspector.causal)
    if as_json:
        _print_json({"tokens": [r.to_dict() for r in rows], "layer": layer, "head": head, "view": view.title,
                     "panels": [{"caption": c, "weights": m.tolist()} for c, m in view.panels],
                     "top": [[{"position": j, "weight": w} for j, w in t] for t in top]})
    else:
        _print_top(rows, view.title, top, inspector.causal)
    labels = [r.label for r in rows]
    _draw(png, lambda plots, path: plots.attention_png(view, labels, path))


def _print_top(rows, title: str, top, causal: bool) -> None:
    which = "earlier tokens" if causal else "other tokens (an encoder looks both ways)"
    print(f"attention over {len(rows)} tokens, {title}; each token's most-attended {which}:")
    for r, sources in zip(rows, top):
        listed = ", ".join(f"{rows[j].text!r} {w:.2f}" for j, w in sources) or "(first token: only itself)"
        print(f"{r.position:>4} {r.text!r:<16} <- {listed}")
