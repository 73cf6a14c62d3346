"""BERT encoders (all-MiniLM-L6-v2, BERT, MiniLM): post-norm blocks, learned positions,
bidirectional attention under a padding mask, exact GELU. In: Hugging Face weights. Out:
the encoder graph; pooling happens in the runtime (edge/embeddings/pooling.py), so one graph serves
mean and CLS pooling alike.
    inputs  input_ids (batch, seq) int64; attention_mask (batch, seq) int64, 1 for real
            tokens; token_type_ids (batch, seq) int64
    outputs last_hidden_state (batch, seq, hidden) float32; with `g.capture_attention`
            (inspection graphs) also attention.{layer} (batch, heads, seq, seq), computed
            with plain ops instead of MultiHeadAttention, which cannot output its weights
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edge.manifest import GraphSpec, ModelConfig
from export.graph.builder import MS_DOMAIN, GraphBuilder

FLOAT, INT64, INT32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"


def build(g: GraphBuilder, model: ModelConfig, weights: dict[str, np.ndarray], config, file: str) -> GraphSpec:
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    ids, mask, types = (g.input(name, INT64, ["batch", "seq"]) for name in INPUTS)
    eps = config.layer_norm_eps
    h = _embeddings(g, weights, f"{prefix}embeddings", ids, types, eps)
    key_mask = _key_bias(g, mask) if g.capture_attention else g.op("Cast", mask, to=INT32)  # (B, S)
    for layer in range(model.num_layers):
        p = f"{prefix}encoder.layer.{layer}"
        attn = _attention(g, model, weights, p, h, key_mask, layer)
        h = g.add_norm(h, attn, weights[f"{p}.attention.output.LayerNorm.weight"],
                       weights[f"{p}.attention.output.LayerNorm.bias"], eps, f"{p}.attention.output.LayerNorm")
        h = g.add_norm(h, _mlp(g, weights, p, h), weights[f"{p}.output.LayerNorm.weight"],
                       weights[f"{p}.output.LayerNorm.bias"], eps, f"{p}.output.LayerNorm")
    g.output(h, OUTPUT, FLOAT, ["batch", "seq", model.hidden_size])
    g.outputs.sort(key=lambda o: o.name != OUTPUT)
    return GraphSpec(file=file, inputs=INPUTS, outputs=tuple(o.name for o in g.outputs))


def _embeddings(g: GraphBuilder, weights, p: str, ids: str, types: str, eps: float) -> str:
    """LayerNorm(word[ids] + position[0..S) + type[types]) -> (B, S, H)."""
    words = g.embedding(ids, weights[f"{p}.word_embeddings.weight"], f"{p}.word_embeddings")
    seq = g.op("Shape", ids, start=1, end=2)  # (1,)
    table = g.table("positions", f"{p}.position_embeddings.weight", weights[f"{p}.position_embeddings.weight"])
    positions = g.op("Slice", table, g.const([0]), seq, g.const([0]))  # (S, H), broadcast over the batch
    type_table = g.init(f"{p}.token_type_embeddings.weight",
                        weights[f"{p}.token_type_embeddings.weight"].astype(np.float32))
    extra = g.op("Add", g.op("Gather", type_table, types), positions)  # (B, S, H)
    return g.add_norm(words, extra, weights[f"{p}.LayerNorm.weight"], weights[f"{p}.LayerNorm.bias"], eps,
                      f"{p}.LayerNorm")


def _attention(g: GraphBuilder, model: ModelConfig, weights, p: str, h: str, key_mask: str, layer: int) -> str:
    """One packed q/k/v projection, then onnxruntime's MultiHeadAttention: padded keys get
    no weight, and every query sees every real key (no causal mask)."""
    names = [f"{p}.attention.self.{n}" for n in ("query", "key", "value")]
    weight = np.concatenate([weights[f"{n}.weight"] for n in names])  # (3H, H)
    bias = np.concatenate([weights[f"{n}.bias"] for n in names])
    qkv = g.linear(h, weight, f"{p}.attention.self.qkv", bias)  # (B, S, 3H)
    width = model.num_heads * model.head_dim
    q, k, v = g.op("Split", qkv, g.const([width] * 3), axis=-1, outputs=3)
    if g.capture_attention:
        context = _plain_attention(g, model, q, k, v, key_mask, layer)
    else:
        context = g.op("MultiHeadAttention", q, k, v, "", key_mask, domain=MS_DOMAIN, num_heads=model.num_heads)
    out = f"{p}.attention.output.dense"
    return g.linear(context, weights[f"{out}.weight"], out, weights[f"{out}.bias"])


def _key_bias(g: GraphBuilder, mask: str) -> str:
    """(B, S) 1/0 mask -> (B, 1, 1, S) float: 0 for real keys, the float minimum for padding."""
    padding = g.op("Sub", g.const(1.0, np.float32), g.op("Cast", mask, to=FLOAT))
    bias = g.op("Mul", padding, g.const(np.finfo(np.float32).min, np.float32))
    return g.op("Unsqueeze", bias, g.const([1, 2]))


def _plain_attention(g: GraphBuilder, model: ModelConfig, q: str, k: str, v: str, key_bias: str, layer: int) -> str:
    """softmax(q k^T / sqrt(d) + key_bias) v with standard ops, the weights a graph output."""
    heads, dim = model.num_heads, model.head_dim
    qh, kh, vh = (g.split_heads(t, heads, dim) for t in (q, k, v))  # (B, H, S, D)
    scores = g.op("MatMul", qh, g.op("Transpose", kh, perm=[0, 1, 3, 2]))  # (B, H, S, S)
    scaled = g.op("Mul", scores, g.const(1.0 / np.sqrt(dim), np.float32))
    probs = g.op("Softmax", g.op("Add", scaled, key_bias), axis=-1)
    g.output(probs, f"attention.{layer}", FLOAT, ["batch", heads, "seq", "seq"])
    return g.merge_heads(g.op("MatMul", probs, vh), heads, dim)


def _mlp(g: GraphBuilder, weights, p: str, h: str) -> str:
    """dense(gelu(intermediate(h))) with the exact (erf) GELU BERT was trained with."""
    inner = f"{p}.intermediate.dense"
    up = g.linear(h, weights[f"{inner}.weight"], inner, weights[f"{inner}.bias"])
    act = g.op("Gelu", up, domain=MS_DOMAIN)
    out = f"{p}.output.dense"
    return g.linear(act, weights[f"{out}.weight"], out, weights[f"{out}.bias"])
