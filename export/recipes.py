"""What a bundle is made of: every quantization choice, one named recipe per `--quantize`.

In: a recipe name (`--quantize int8`) or a `Recipe`. Out: the `QuantSpec` each kind of
graph is stored with: edge's own decoder graphs, encoder graphs, and graphs traced by the
fallback (None: float32 weights). `export/quantize.py` does the arithmetic and the graph
builders follow the spec they are given; the choices themselves are all here. Why these
values: README "Quantization: why this scheme", figures in benchmarks/quantization.md.

A new recipe is one more entry in RECIPES; `--quantize` offers whatever is listed. Not
here: how the quantized LM head is cut into row parts (graph/builder.py HEAD_PART_BYTES),
which changes the load-time memory peak, not a single stored value.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import ExportError
from export.quantize import QuantSpec


@dataclass(frozen=True)
class Recipe:
    name: str  # what `--quantize` takes
    describe: str  # a few words, for the error that lists the recipes
    decoder: QuantSpec | None  # causal LMs with edge's own graph (export/graph/llama.py, gpt2.py)
    encoder: QuantSpec | None  # feature-extraction models (export/graph/bert.py)
    traced: QuantSpec | None  # causal LMs through the traced fallback (export/graph/traced.py)


# Linear layers: MatMulNBits 8-bit asymmetric blocks of 32 with int8 activations per block
# (accuracy_level 4: level 0's float activations are marginally closer and ~25x slower); the
# LM head untied and stored like the other layers; the token table int8 per block of 32,
# its rows read by the runtime (`embedding_rows`: onnxruntime never maps the table).
INT8_DECODER = QuantSpec(bits=8, block_size=32, symmetric=False, accuracy_level=4, embeddings=True,
                         embedding_rows=True)

# 4-bit codes spanning each block's own [min, max], the minimum added back in float (a GGUF's
# Q4_1 blocks exactly); the LM head 8-bit symmetric (Q8_0's grid); the token table as int8.
INT4_DECODER = QuantSpec(bits=4, block_size=32, block_min=True, head_symmetric=True, accuracy_level=4,
                         embeddings=True, embedding_rows=True)

# Encoders run thousands of rows per call, where MatMulNBits' work per block of weights (a
# scale and a block sum per 32 products), not the weight bytes, sets the pace: 8-bit blocks
# of 64 make MiniLM ~10% faster (paragraphs 170 -> 190/s) for cosine to fp32 0.99966 ->
# 0.99944 (mean) and the same retrieval agreement (benchmarks/README.md). The token table
# keeps blocks of 32 (`block_size`): it is only looked up. Encoder graphs take ids.
INT8_ENCODER = QuantSpec(bits=8, block_size=32, symmetric=False, accuracy_level=4, embeddings=True,
                         block_sizes=(("encoder.layer.", 64),))

# A traced graph's MatMuls carry the exporter's names, not the model's, so it gets plain
# blocks for every MatMul: no float block minimum, no per-weight choices; its embedding
# table stays float32 (the tracer's Gather, untouched).
INT8_TRACED = QuantSpec(bits=8, block_size=32, symmetric=False, accuracy_level=4, embeddings=False)
INT4_TRACED = QuantSpec(bits=4, block_size=32, symmetric=False, accuracy_level=4, embeddings=False)

RECIPES = {
    r.name: r
    for r in (
        Recipe("int8", "8-bit weights in blocks of 32, the default",
               decoder=INT8_DECODER, encoder=INT8_ENCODER, traced=INT8_TRACED),
        # int4 encoders: the decoder's spec unchanged (the blocks of 64 above are an 8-bit choice)
        Recipe("int4", "4-bit weights with a float block minimum, 8-bit LM head",
               decoder=INT4_DECODER, encoder=INT4_DECODER, traced=INT4_TRACED),
        Recipe("none", "float32 weights", decoder=None, encoder=None, traced=None),
    )
}
DEFAULT = "int8"


def recipe(choice: str | Recipe) -> Recipe:
    """A recipe by name (`--quantize`), or the `Recipe` given (benchmarks build their own)."""
    if isinstance(choice, Recipe):
        return choice
    if choice not in RECIPES:
        offered = "; ".join(f"{r.name} ({r.describe})" for r in RECIPES.values())
        raise ExportError(f"--quantize must be one of {offered}; got {choice!r}.")
    return RECIPES[choice]
