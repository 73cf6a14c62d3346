"""What every decoder graph shares: inputs, positions, attention over a KV cache, logits.

Two forms of the same model, chosen by the builder:
- fused (bundles): onnxruntime's GroupQueryAttention does rotary, the causal mask,
  grouped heads and the cache update in one op per layer; the cache is a preallocated
  (batch, kv_heads, capacity, head_dim) buffer that the runtime binds as both past and
  present, so a step writes only its new entries (no copy that grows with the context).
    inputs  input_ids (batch, seq) int64, or inputs_embeds (batch, seq, hidden) float32 when
            quantized (see `takes_rows`); logits_to_keep () int64; seqlens_k (batch,) int32
            (= tokens in cache after this step - 1); total_sequence_length () int32;
            past.{i}.key / past.{i}.value (batch, kv_heads, capacity, head_dim)
    outputs logits (batch, logits_to_keep, vocab); present.{i}.key / .value (same buffers)
- plain (inspection graphs, or heads GroupQueryAttention cannot take): standard ops that
  can also output the attention weights; the cache grows by concatenation.
    inputs  input_ids (or inputs_embeds, as above); logits_to_keep; past.{i}.key / .value
            (batch, kv_heads, past, head_dim)
    outputs logits; present.{i}.key / .value (batch, kv_heads, past + seq, head_dim);
            attention.{i} (batch, heads, seq, past + seq) when capturing
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from edge.inspect.positions import rotary_angles
from edge.manifest import GraphSpec, KVLayout, ModelConfig
from export.graph.builder import MS_DOMAIN, GraphBuilder

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32


def can_fuse(g: GraphBuilder, model: ModelConfig) -> bool:
    """GroupQueryAttention needs head_dim % 8 (and % 16 with rotary); inspection needs weights."""
    multiple = 16 if model.positional.kind == "rotary" else 8
    return not g.capture_attention and model.head_dim % multiple == 0


@dataclass(frozen=True)
class DecoderInputs:
    """Graph-wide values every layer uses."""

    tokens: str  # input_ids (B, S) int64, or inputs_embeds (B, S, H) float32 (see takes_rows)
    start: str  # (1,) int64: position of the first new token (= tokens already cached)
    end: str  # (1,) int64: one past the last new token
    mask: str | None = None  # plain: (rep * S, T) float, 0 where a query may attend
    seqlens_k: str | None = None  # fused: (B,) int32
    total: str | None = None  # fused: () int32


@dataclass(frozen=True)
class Rotary:
    """Rotary tables: fused takes (context, D/2) caches; plain slices (S, D) rows by position."""

    cos: str
    sin: str
    rotate_half: str | None = None  # plain only: (D, D) matrix, x @ R == rotate_half(x)


def takes_rows(g: GraphBuilder) -> bool:
    """Whether the generation graph takes token embedding rows instead of ids: when its table
    is int8 and the spec says so (`embedding_rows`, chosen in export/recipes.py). Mapped by
    onnxruntime, a table pulls each looked-up row's neighbours (a page and the kernel's
    fault-around) into the resident set: 25-50 MB of SmolLM2's 31 MB over a long prompt. The
    runtime reads only the rows it needs (edge/engine/token_rows.py), from the table the
    inspection graph stores (which still gathers in-graph, as fp32 graphs do: a tied fp32
    head reads the whole table every step anyway)."""
    quant = g.quant
    return quant is not None and quant.embeddings and quant.embedding_rows and not g.capture_attention


def declare_inputs(g: GraphBuilder, model: ModelConfig, kv: KVLayout) -> DecoderInputs:
    if takes_rows(g):
        tokens = g.input("inputs_embeds", FLOAT, ["batch", "seq", model.hidden_size])
    else:
        tokens = g.input("input_ids", INT64, ["batch", "seq"])
    g.input("logits_to_keep", INT64, [])
    seq_len = g.op("Shape", tokens, start=1, end=2)  # (1,)
    if kv.shared_buffer:
        seqlens_k = g.input("seqlens_k", INT32, ["batch"])
        total = g.input("total_sequence_length", INT32, [])
    _declare_past(g, model, kv)
    if kv.shared_buffer:
        end = g.op("Cast", g.op("Reshape", total, g.const([1])), to=INT64)  # (1,)
        return DecoderInputs(tokens, g.op("Sub", end, seq_len), end, seqlens_k=seqlens_k, total=total)
    start = g.op("Shape", kv.past_key.format(layer=0), start=2, end=3)  # (1,)
    end = g.op("Add", start, seq_len)
    scalar = g.const([0])
    positions = g.op("Range", g.op("Squeeze", start, scalar), g.op("Squeeze", end, scalar), g.const(1))  # (S,)
    keys = g.op("Range", g.const(0), g.op("Squeeze", end, scalar), g.const(1))  # (T,)
    future = g.op("Greater", g.op("Unsqueeze", keys, scalar), g.op("Unsqueeze", positions, g.const([1])))
    mask = g.op("Where", future, g.const(np.finfo(np.float32).min, np.float32), g.const(0.0, np.float32))  # (S, T)
    rep = model.num_heads // model.num_kv_heads
    if rep > 1:
        mask = g.op("Tile", mask, g.const([rep, 1]))  # (rep * S, T): row r*S + i is query i
    return DecoderInputs(tokens, start, end, mask=mask)


def token_embeddings(g: GraphBuilder, inputs: DecoderInputs, table: np.ndarray, name: str) -> str:
    """(B, S, H): the rows the runtime passed in, or the graph's own lookup of the ids."""
    return inputs.tokens if takes_rows(g) else g.embedding(inputs.tokens, table, name)


def position_rows(g: GraphBuilder, table: str, inputs: DecoderInputs) -> str:
    """Rows start .. end - 1 of a (positions, ...) table, as one Slice."""
    return g.op("Slice", table, inputs.start, inputs.end, g.const([0]))


def _declare_past(g: GraphBuilder, model: ModelConfig, kv: KVLayout) -> None:
    length = "capacity" if kv.shared_buffer else "past"
    for layer in range(model.num_layers):
        for name in (kv.past_key, kv.past_value):
            g.input(name.format(layer=layer), FLOAT, ["batch", model.num_kv_heads, length, model.head_dim])


def rotary(g: GraphBuilder, model: ModelConfig, kv: KVLayout, inputs: DecoderInputs) -> Rotary:
    """cos/sin of position * theta^(-2i/d) for the form in use (HF rotate_half convention)."""
    dim = model.positional.rotary_dim
    angles = rotary_angles(model.context_length, dim, model.positional.rope_theta)  # (ctx, dim/2)
    cos = g.init("rotary.cos", np.cos(angles).astype(np.float32))
    sin = g.init("rotary.sin", np.sin(angles).astype(np.float32))
    if kv.shared_buffer:
        return Rotary(cos, sin)
    # The same (ctx, dim/2) tables as the fused form (an inspection graph shares their bytes),
    # halves repeated after slicing: (S, dim).
    cos, sin = (g.op("Concat", rows, rows, axis=-1) for rows in (position_rows(g, t, inputs) for t in (cos, sin)))
    return Rotary(cos, sin, g.init("rotary.rotate_half", _rotate_half_matrix(dim)))


def _rotate_half_matrix(dim: int) -> np.ndarray:
    """R with x @ R == concat(-x[d/2:], x[:d/2]): one MatMul instead of Split/Neg/Concat."""
    half = dim // 2
    r = np.zeros((dim, dim), dtype=np.float32)
    r[np.arange(half) + half, np.arange(half)] = -1.0
    r[np.arange(half), np.arange(half) + half] = 1.0
    return r


def attention(g: GraphBuilder, model: ModelConfig, kv: KVLayout, inputs: DecoderInputs, layer: int,
              qkv: str, rope: Rotary | None) -> str:
    """Causal self-attention over the cache. qkv (B, S, (H + 2 KV) * D) packed, q pre-scaled
    by 1/sqrt(head_dim) -> (B, S, H * D)."""
    names = [kv.present_key.format(layer=layer), kv.present_value.format(layer=layer)]
    if not kv.shared_buffer:
        return _plain_attention(g, model, kv, inputs, layer, qkv, rope, names)
    past = [kv.past_key.format(layer=layer), kv.past_value.format(layer=layer)]
    tables = [rope.cos, rope.sin] if rope else []
    out = g.op("GroupQueryAttention", qkv, "", "", *past, inputs.seqlens_k, inputs.total, *tables,
               outputs=[f"/attn.{layer}/out", *names], domain=MS_DOMAIN, num_heads=model.num_heads,
               kv_num_heads=model.num_kv_heads, scale=1.0, do_rotary=int(rope is not None))
    _declare_present(g, model, names, "capacity")
    return out[0]


def _declare_present(g: GraphBuilder, model: ModelConfig, names: list[str], length: str) -> None:
    for name in names:
        g.declare_output(name, FLOAT, ["batch", model.num_kv_heads, length, model.head_dim])


def _plain_attention(g, model: ModelConfig, kv: KVLayout, inputs: DecoderInputs, layer: int,
                     qkv: str, rope: Rotary | None, names: list[str]) -> str:
    """softmax(q k^T + mask) v with standard ops. Grouped-query attention folds the query
    heads that share a KV head into the sequence axis, so K and V are never repeated."""
    q_width, kv_width = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    q, k, v = g.op("Split", qkv, g.const([q_width, kv_width, kv_width]), axis=-1, outputs=3)
    q = g.split_heads(q, model.num_heads, model.head_dim)  # (B, H, S, D)
    k = g.split_heads(k, model.num_kv_heads, model.head_dim)  # (B, KV, S, D)
    v = g.split_heads(v, model.num_kv_heads, model.head_dim)
    if rope is not None:
        q, k = (g.op("Add", g.op("Mul", t, rope.cos), g.op("Mul", g.op("MatMul", t, rope.rotate_half), rope.sin))
                for t in (q, k))
    present_k = g.op("Concat", kv.past_key.format(layer=layer), k, axis=2, outputs=[names[0]])  # (B, KV, T, D)
    present_v = g.op("Concat", kv.past_value.format(layer=layer), v, axis=2, outputs=[names[1]])
    _declare_present(g, model, names, "total")
    grouped = g.op("Reshape", q, g.const([0, model.num_kv_heads, -1, model.head_dim]))  # (B, KV, rep*S, D)
    scores = g.op("MatMul", grouped, g.op("Transpose", present_k, perm=[0, 1, 3, 2]))  # (B, KV, rep*S, T)
    probs = g.op("Softmax", g.op("Add", scores, inputs.mask), axis=-1)
    if g.capture_attention:
        weights = g.op("Reshape", probs, g.const([0, model.num_heads, -1, 0]))  # (B, H, S, T)
        g.output(weights, f"attention.{layer}", FLOAT, ["batch", model.num_heads, "seq", "total"])
    context = g.op("MatMul", probs, present_v)  # (B, KV, rep*S, D)
    heads = g.op("Reshape", context, g.const([0, model.num_heads, -1, model.head_dim]))  # (B, H, S, D)
    return g.merge_heads(heads, model.num_heads, model.head_dim)


def declare_logits(g: GraphBuilder, hidden: str, head: np.ndarray, tied_table: str | None, model: ModelConfig) -> None:
    """Slice to the last `logits_to_keep` positions, then project to the vocabulary."""
    keep = g.op("Unsqueeze", "logits_to_keep", g.const([0]))
    last = g.op("Slice", hidden, g.op("Neg", keep), g.const([np.iinfo(np.int64).max]), g.const([1]))
    logits = g.lm_head(last, head, tied_table)
    g.output(logits, "logits", FLOAT, ["batch", "keep", model.vocab_size])


def graph_spec(g: GraphBuilder, kv: KVLayout, file: str) -> GraphSpec:
    return GraphSpec(
        file=file,
        inputs=tuple(i.name for i in g.inputs),
        outputs=tuple(o.name for o in g.outputs),
        kv=kv,
    )
