"""Block-wise weight quantization in numpy, in the layouts onnxruntime's kernels read.

Why blocks: one scale per 32 weights follows the weights' local range, so 8-bit blocks
are near lossless (SmolLM2: perplexity +0.5%), where one scale per tensor or per channel
is not; 4-bit blocks with a float block minimum (`block_min`) reproduce a GGUF's Q4_1
blocks exactly. Figures: benchmarks/quantization.md. Activations are never quantized ahead of time here: MatMulNBits
quantizes them per block at run time, so a long prompt keeps per-token precision. The one
exception to blocks: the pi4 recipe's LM head, int8 per output channel (`quantize_channels`)
for MatMulInteger, whose activations the graph quantizes per row per 64 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class QuantSpec:
    """How linear weights are stored: `bits` per weight, one scale per `block_size` weights.
    The specs bundles are made with are chosen in export/recipes.py."""

    bits: int = 8
    block_size: int = 32
    symmetric: bool = False  # asymmetric blocks keep a zero point: better on skewed weights
    accuracy_level: int = 4  # MatMulNBits: 4 = int8 activations per block (fast); 0 = float activations
    # Each block spans exactly its own [min, max] and the minimum is added back in float
    # (one small MatMul of per-block input sums): integer zero points cannot hold it, float
    # ones run ~27x slower on CPU (4-bit) or are refused (8-bit). Reproduces Q4_1 blocks exactly.
    block_min: bool = False
    head_symmetric: bool = False  # LM head as 8-bit symmetric blocks (Q8_0's grid: exact on it)
    keep_8bit: tuple[str, ...] = ()  # weights whose name contains one of these stay 8-bit
    embeddings: bool = True  # int8 embedding table (False: the graph keeps its float table)
    # with an int8 table, a generation graph takes the rows (inputs_embeds) the runtime reads
    # from it instead of ids (export/graph/causal_lm.py `takes_rows`)
    embedding_rows: bool = True
    # (name part, block size): weights whose name contains the part use that block size, first match
    block_sizes: tuple[tuple[str, int], ...] = ()
    # > 0: the LM head runs as MatMulInteger on int8 weights with one scale per output channel,
    # its activations quantized to int8 in the graph with one scale per row per this many
    # inputs (graph/builder.py _integer_head): packed integer kernels on every CPU, with or
    # without dot product, where 8-bit MatMulNBits dequantizes per call on one without
    head_integer_chunk: int = 0

    @property
    def scheme(self) -> str:
        return f"int{self.bits}"

    def for_weight(self, name: str) -> QuantSpec:
        """The spec one weight is stored with. Example: keep_8bit=("down_proj",) ->
        "model.layers.3.mlp.down_proj" gets bits=8, without the float block minimum."""
        # 8-bit weights keep int8 activations: without them the CPU kernel dequantizes the
        # whole weight every call (~17x slower than accuracy_level 4)
        if name == "lm_head" and self.head_symmetric:
            return replace(self, bits=8, symmetric=True, block_min=False, accuracy_level=4)
        if any(part in name for part in self.keep_8bit):
            return replace(self, bits=8, block_min=False, accuracy_level=4)
        for part, size in self.block_sizes:
            if part in name:
                return replace(self, block_size=size, block_sizes=())
        return self

    def describe(self) -> str:
        kind = "min-max blocks, float minimum" if self.block_min else "symmetric" if self.symmetric else "asymmetric"
        text = (f"MatMulNBits {self.bits}-bit {kind} weights, blocks of {self.block_size}, "
                f"accuracy_level {self.accuracy_level}")
        if self.head_integer_chunk:
            text += (f"; LM head MatMulInteger, int8 weights per channel, "
                     f"activations int8 per {self.head_integer_chunk} inputs")
        elif self.head_symmetric:
            text += "; LM head 8-bit symmetric"
        if self.keep_8bit:
            text += f"; 8-bit: {', '.join(self.keep_8bit)}"
        if self.block_sizes:
            text += "; " + ", ".join(f"blocks of {size}: {part}" for part, size in self.block_sizes)
        return text + (f"; embeddings int8 per block of {self.block_size}" if self.embeddings else "; embeddings float32")


@dataclass(frozen=True)
class BlockQuantized:
    """MatMulNBits inputs for a weight of shape (N, K) = (out_features, in_features)."""

    packed: np.ndarray  # (N, blocks, block_size * bits / 8) uint8
    scales: np.ndarray  # (N * blocks,) float32
    zero_points: np.ndarray | None  # (N * ceil(blocks * bits / 8),) uint8, packed like `packed`
    offsets: np.ndarray | None = None  # (N, blocks) float32: block_min's minimum, weight = kernel's + offset


def quantize_matmul_weight(weight: np.ndarray, spec: QuantSpec) -> BlockQuantized:
    """Quantize each row of `weight` (N, K) in blocks along K, unsigned with a zero point.

    Example (bits=8, symmetric): a block [-1.0, 0.5] gets scale 1/127, codes [1, 192]
    with the implicit zero point 128.
    """
    if spec.block_min and weight.shape[1] % spec.block_size == 0:
        return _quantize_block_min(weight, spec)
    levels = (1 << spec.bits) - 1
    blocks = _blocks(weight, spec.block_size)  # (N, n_blocks, block_size)
    if spec.symmetric:
        absmax = np.abs(blocks).max(axis=-1, keepdims=True)
        half = 1 << (spec.bits - 1)
        scale = absmax / (half - 1)
        zero = np.full(scale.shape, half, dtype=np.float32)
    else:
        low = np.minimum(blocks.min(axis=-1, keepdims=True), 0.0)
        high = np.maximum(blocks.max(axis=-1, keepdims=True), 0.0)
        scale = (high - low) / levels
        zero = np.clip(np.round(-low / np.where(scale == 0, 1, scale)), 0, levels)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(blocks / scale) + zero, 0, levels).astype(np.uint8)
    packed = _pack(codes, spec.bits)
    zero_points = None if spec.symmetric else _pack(zero[..., 0].astype(np.uint8), spec.bits).ravel()
    return BlockQuantized(packed, scale.reshape(-1), zero_points)


def _quantize_block_min(weight: np.ndarray, spec: QuantSpec) -> BlockQuantized:
    """Codes c over each block's own range: w = (c - half) * scale + offset, the implicit
    zero point `half` absorbed into the float offset. Example (bits=4): a Q4_1 block
    d * q + m gives scale d, codes q, offset m + 8 d (exact)."""
    levels, half = (1 << spec.bits) - 1, 1 << (spec.bits - 1)
    blocks = _blocks(weight, spec.block_size)  # (N, n_blocks, block_size)
    low = blocks.min(axis=-1, keepdims=True)
    scale = (blocks.max(axis=-1, keepdims=True) - low) / levels
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round((blocks - low) / scale), 0, levels).astype(np.uint8)
    offsets = (low + half * scale)[..., 0].astype(np.float32)  # (N, n_blocks)
    return BlockQuantized(_pack(codes, spec.bits), scale.reshape(-1), None, offsets)


def dequantize_matmul_weight(q: BlockQuantized, shape: tuple[int, int], spec: QuantSpec) -> np.ndarray:
    """The (N, K) float weight the kernel (plus the float block offsets) sees: the oracle
    for tests and quality checks."""
    n, k = shape
    codes = _unpack(q.packed, spec.bits).astype(np.float32)  # (N, blocks, block_size)
    blocks = codes.shape[1]
    if q.zero_points is None:
        zero = np.float32(1 << (spec.bits - 1))
    else:
        per_row = -(-blocks * spec.bits // 8)
        zero = _unpack(q.zero_points.reshape(n, per_row), spec.bits)[:, :blocks, None]
    scales = q.scales.reshape(n, blocks, 1)
    weight = (codes - zero) * scales
    if q.offsets is not None:
        weight = weight + q.offsets[..., None]
    return weight.reshape(n, -1)[:, :k]


def quantize_channels(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel, stored unsigned: (N, K) -> codes (K, N) uint8 =
    int8 + 128 (MatMulInteger's B, zero point 128), scales (N,) float32. Unsigned codes put
    MatMulInteger on onnxruntime's U8U8 kernels, exact on every x86 (U8S8 adds pairs in 16
    bits and can saturate without VNNI). Example: a row [-1.0, 0.5] -> codes [1, 192], scale 1/127."""
    absmax = np.abs(weight).max(axis=1)  # (N,)
    scales = np.where(absmax == 0, 1.0, absmax / 127.0).astype(np.float32)
    codes = np.clip(np.round(weight / scales[:, None]), -127, 127) + 128  # (N, K)
    return np.ascontiguousarray(codes.T.astype(np.uint8)), scales


def quantize_embedding(table: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per block of each row: (V, H) -> codes (V, H) int8, scales (V, H/block)."""
    blocks = _blocks(table, block_size)  # (V, n_blocks, block_size)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(blocks / scale), -127, 127).astype(np.int8)
    return codes.reshape(table.shape[0], -1)[:, : table.shape[1]], scale[..., 0]


def _blocks(weight: np.ndarray, block_size: int) -> np.ndarray:
    """(N, K) -> (N, ceil(K / block), block), zero-padded at the end of each row."""
    n, k = weight.shape
    pad = -k % block_size
    padded = np.pad(weight.astype(np.float32), ((0, 0), (0, pad)))
    return padded.reshape(n, -1, block_size)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack codes along the last axis: 8 bits as is; 4 bits two per byte, low nibble first."""
    if bits == 8:
        return codes
    if bits == 4:
        if codes.shape[-1] % 2:
            codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
        return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    raise ValueError(f"unsupported bit width {bits}")


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    low, high = packed & 0x0F, packed >> 4
    return np.stack([low, high], axis=-1).reshape(packed.shape[:-1] + (-1,))
