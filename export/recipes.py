"""What a bundle is made of: every quantization choice, one named recipe per `--quantize`.

In: a recipe name (`--quantize int8`), a target CPU (`--target pi4`: TARGETS) or a `Recipe`.
Out: the `QuantSpec` each kind of graph is stored with: edge's own decoder graphs, encoder
graphs, and graphs traced by the fallback (None: float32 weights), and the CPU features its
kernels need (recorded in the manifest). `export/quantize.py` does the arithmetic and the graph
builders follow the spec they are given; the choices themselves are all here. Why these
values: README "Quantization: why this scheme", figures in benchmarks/quantization.md.

A new recipe is one more entry in RECIPES; `--quantize` offers whatever is listed. Not
here: how the quantized LM head is cut into row parts (graph/builder.py HEAD_PART_BYTES),
which changes the load-time memory peak, not a single stored value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edge.errors import ExportError
from export.quantize import QuantSpec


# The /proc/cpuinfo flags, per architecture, that a recipe's kernels need to run packed in
# onnxruntime (MLAS) rather than dequantize their weights on every call. 8-bit MatMulNBits:
# AVX2 on x86, dot product (asimddp) on Arm; 4-bit MatMulNBits and MatMulInteger: AVX2 on
# x86, plain NEON on Arm. Recorded in the manifest; `edge.load` warns when the CPU lacks them.
NEEDS_INT8_KERNELS = {"x86_64": ("avx2",), "aarch64": ("asimddp",)}
NEEDS_NEON = {"x86_64": ("avx2",), "aarch64": ("asimd",)}


@dataclass(frozen=True)
class Recipe:
    name: str  # what `--quantize` takes
    describe: str  # a few words, for the error that lists the recipes
    decoder: QuantSpec | None  # causal LMs with edge's own graph (export/graph/llama.py, gpt2.py)
    encoder: QuantSpec | None  # feature-extraction models (export/graph/bert.py)
    traced: QuantSpec | None  # causal LMs through the traced fallback (export/graph/traced.py)
    # architecture -> cpuinfo flags its kernels need (above); {}: none (fp32)
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)


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

# For CPUs without int8 dot product (a Raspberry Pi 4's Cortex-A72), where onnxruntime has
# no int8 kernel for MatMulNBits and dequantizes 8-bit weights to float on every call: the
# int4 layers, whose 4-bit kernel packs once and runs fused in float there (accuracy_level 4
# becomes float activations on such a CPU and stays int8 ones elsewhere: level 0 would gain
# nothing on a Pi 4 and cost x86 +50% decode time), and the LM head as MatMulInteger (int8
# weights per channel, activations int8 per row per 64 inputs), packed integer NEON kernels
# without dot product. SmolLM2 on the emulated A72: 0.14x the int8 bundle's instructions per
# decode step, no per-call dequantization; perplexity +0.3%, top-1 95.7% (benchmarks/README.md).
PI4_DECODER = replace(INT4_DECODER, head_symmetric=False, head_integer_chunk=64)

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
               decoder=INT8_DECODER, encoder=INT8_ENCODER, traced=INT8_TRACED, needs=NEEDS_INT8_KERNELS),
        # int4 encoders: the decoder's spec unchanged (the blocks of 64 above are an 8-bit choice)
        Recipe("int4", "4-bit weights with a float block minimum, 8-bit LM head",
               decoder=INT4_DECODER, encoder=INT4_DECODER, traced=INT4_TRACED, needs=NEEDS_INT8_KERNELS),
        # encoders stay float32: 4-bit blocks cost MiniLM a cosine to fp32 of 0.973 mean, 0.905
        # min (int8: 0.9997), and 8-bit MatMulNBits is what a Pi 4 cannot pack; MiniLM is 90 MB
        # in fp32, whose packed SGEMM runs everywhere. Traced graphs: int4's 4-bit blocks
        Recipe("pi4", "int4 layers and an int8 MatMulInteger LM head, for CPUs without dot product",
               decoder=PI4_DECODER, encoder=None, traced=INT4_TRACED, needs=NEEDS_NEON),
        Recipe("none", "float32 weights", decoder=None, encoder=None, traced=None),
    )
}
DEFAULT = "int8"

# What `--target` exports: the recipe whose kernels run packed on that CPU (README "Raspberry Pi").
TARGETS = {
    "pi4": "pi4",  # no int8 dot product: Raspberry Pi 4 (Cortex-A72), Pi 3 / Zero 2 (A53)
    "pi5": "int8",  # dot product: Raspberry Pi 5 (Cortex-A76); 8-bit MatMulNBits runs packed sdot kernels
    # the pi4 recipe runs packed on every CPU edge knows (x86 with AVX2, Arm with or without dot
    # product), with int8's quality and 70% of its weight bytes; on a Pi 5 it takes ~1.4x int8's
    # instructions per decode step, on x86 about int8's time
    "portable": "pi4",
    "native": None,  # this CPU's: edge.tools.doctor.fitting_recipe reads /proc/cpuinfo
}


def choose(quantize: str | Recipe | None, target: str | None) -> Recipe:
    """The recipe `--quantize` and `--target` ask for together (the default without either).
    Example: (None, "pi5") -> int8; ("int8", "pi4") -> an error: they disagree."""
    if target is None:
        return recipe(DEFAULT if quantize is None else quantize)
    if target not in TARGETS:
        raise ExportError(f"--target must be one of {', '.join(TARGETS)}; got {target!r}.")
    name = TARGETS[target] or _native()
    chosen = recipe(name if quantize is None else quantize)
    if chosen.name != name:
        raise ExportError(f"--target {target} exports --quantize {name}, not {chosen.name}: pass one of the two.")
    return chosen


def _native() -> str:
    from edge.tools.doctor import fitting_recipe, host_cpu

    return fitting_recipe(host_cpu())


def recipe(choice: str | Recipe) -> Recipe:
    """A recipe by name (`--quantize`), or the `Recipe` given (benchmarks build their own)."""
    if isinstance(choice, Recipe):
        return choice
    if choice not in RECIPES:
        offered = "; ".join(f"{r.name} ({r.describe})" for r in RECIPES.values())
        raise ExportError(f"--quantize must be one of {offered}; got {choice!r}.")
    return RECIPES[choice]
