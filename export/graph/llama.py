"""The Llama family (SmolLM2, TinyLlama, Qwen2): RMSNorm, rotary positions, grouped-query
attention, SwiGLU MLP. In: Hugging Face weights. Out: the decoder graph (see causal_lm.py).
"""

from __future__ import annotations

import numpy as np

from edge.manifest import KVLayout, ModelConfig
from export.graph.builder import GraphBuilder
from export.graph.causal_lm import attention, declare_inputs, declare_logits, rotary, token_embeddings


def build(g: GraphBuilder, model: ModelConfig, weights: dict[str, np.ndarray], config, kv: KVLayout) -> None:
    inputs = declare_inputs(g, model, kv)
    rope = rotary(g, model, kv, inputs)
    table = weights["model.embed_tokens.weight"]
    x = token_embeddings(g, inputs, table, "model.embed_tokens")  # (B, S, H): the residual stream
    eps = config.rms_norm_eps
    first = "model.layers.0.input_layernorm"
    h = g.rms_norm(x, weights[f"{first}.weight"], eps, first)
    for layer in range(model.num_layers):
        p = f"model.layers.{layer}"
        attn = attention(g, model, kv, inputs, layer, _qkv(g, h, weights, p, model), rope)
        out = g.linear(attn, weights[f"{p}.self_attn.o_proj.weight"], f"{p}.self_attn.o_proj")
        norm = f"{p}.post_attention_layernorm"
        h, x = g.skip_norm(x, out, weights[f"{norm}.weight"], None, eps, norm)
        norm = f"model.layers.{layer + 1}.input_layernorm" if layer + 1 < model.num_layers else "model.norm"
        h, x = g.skip_norm(x, _mlp(g, h, weights, p, config.intermediate_size), weights[f"{norm}.weight"], None,
                           eps, norm)
    tied = getattr(config, "tie_word_embeddings", False) or "lm_head.weight" not in weights
    head = table if tied else weights["lm_head.weight"]
    declare_logits(g, h, head, "model.embed_tokens" if tied and g.quant is None else None, model)


def _qkv(g: GraphBuilder, h: str, weights, p: str, model: ModelConfig) -> str:
    """One packed projection (B, S, (H + 2 KV) * D); the 1/sqrt(head_dim) scale is folded into q."""
    scale = 1.0 / np.sqrt(model.head_dim)
    names = ("q_proj", "k_proj", "v_proj")
    scales = (scale, 1.0, 1.0)
    weight = np.concatenate([weights[f"{p}.self_attn.{n}.weight"] * s for n, s in zip(names, scales)])
    biases = [weights.get(f"{p}.self_attn.{n}.bias") for n in names]
    bias = None if biases[0] is None else np.concatenate([b * s for b, s in zip(biases, scales)])
    return g.linear(h, weight, f"{p}.self_attn.qkv_proj", bias)


def _mlp(g: GraphBuilder, h: str, weights, p: str, intermediate: int) -> str:
    """down(silu(gate(h)) * up(h)), gate and up in one projection."""
    gate_up = np.concatenate([weights[f"{p}.mlp.gate_proj.weight"], weights[f"{p}.mlp.up_proj.weight"]])
    fused = g.linear(h, gate_up, f"{p}.mlp.gate_up_proj")  # (B, S, 2 * I)
    gate, up = g.op("Split", fused, g.const([intermediate, intermediate]), axis=-1, outputs=2)
    act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
    return g.linear(act, weights[f"{p}.mlp.down_proj.weight"], f"{p}.mlp.down_proj")
