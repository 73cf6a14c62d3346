"""Parsing JSON that comes from files people pass around (manifests, tokenizers, indexes).

`json.loads` alone lets hostile files escape as odd exceptions: a 100k-deep nesting raises
RecursionError, a 4,300-digit integer a bare ValueError, and a merely deep one (a few
hundred levels) parses but then breaks whatever walks it recursively. `loads` turns each
into one `ValueError` whose text fits in an error message, so every reader has one case.
"""

from __future__ import annotations

import json

MAX_DEPTH = 64  # the deepest real file edge reads nests ~8 levels (a tokenizer's Sequence)


def loads(text: str | bytes) -> object:
    """Parsed JSON, or ValueError("nested deeper than 64 levels" / "...") for hostile input."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError as exc:  # e.g. an integer past sys.get_int_max_str_digits()
        raise ValueError(str(exc).splitlines()[0]) from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether containers nest deeper than `limit`; iterative, so no recursion limit applies.

    Example: ([[[]]], 2) -> True;  ({"a": [1]}, 2) -> False
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
