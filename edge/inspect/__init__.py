"""What the model sees, step by step, for `edge inspect` (numpy + onnxruntime only).

    tokens.py      text -> one row per token: position, id, piece, bytes
    tables.py      the bundle's embedding / position tables, mapped from its files
    embeddings.py  nearest tokens and analogies in the input embedding table (cosine)
    positions.py   learned tables, the sinusoidal formula, rotary angles; similarity by distance
    attention.py   attention weights per layer and head, from the bundle's inspection graph
    plots.py       the pictures (matplotlib, the `viz` extra), with CJK-capable fonts
    inspector.py   `Inspector`: one bundle opened once, the API over all of the above
"""

from edge.inspect.inspector import Inspector

__all__ = ["Inspector"]
