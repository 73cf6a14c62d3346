"""GPT-2: LayerNorm, learned absolute positions, multi-head attention, GELU (tanh) MLP.
In: Hugging Face weights (Conv1D layers store (in, out), so they are transposed here).
Out: the decoder graph (see causal_lm.py).
"""

from __future__ import annotations

import numpy as np

from edge.errors import ExportError
from edge.manifest import KVLayout, ModelConfig
from export.graph.builder import MS_DOMAIN, GraphBuilder
from export.graph.causal_lm import attention, declare_inputs, declare_logits, position_rows, token_embeddings


def build(g: GraphBuilder, model: ModelConfig, weights: dict[str, np.ndarray], config, kv: KVLayout) -> None:
    _check(config)
    inputs = declare_inputs(g, model, kv)
    table = weights["transformer.wte.weight"]
    tokens = token_embeddings(g, inputs, table, "transformer.wte")  # (B, S, H)
    wpe = g.table("positions", "transformer.wpe", weights["transformer.wpe.weight"][: model.context_length])
    x = g.op("Add", tokens, position_rows(g, wpe, inputs))  # the residual stream
    eps = config.layer_norm_epsilon
    h = _norm(g, x, weights, "transformer.h.0.ln_1", eps)
    for layer in range(model.num_layers):
        p = f"transformer.h.{layer}"
        attn = attention(g, model, kv, inputs, layer, _qkv(g, h, weights, p, model), None)
        h, x = _skip_norm(g, x, _conv1d(g, attn, weights, f"{p}.attn.c_proj"), weights, f"{p}.ln_2", eps)
        hidden = g.op("FastGelu", _conv1d(g, h, weights, f"{p}.mlp.c_fc"), domain=MS_DOMAIN)
        norm = f"transformer.h.{layer + 1}.ln_1" if layer + 1 < model.num_layers else "transformer.ln_f"
        h, x = _skip_norm(g, x, _conv1d(g, hidden, weights, f"{p}.mlp.c_proj"), weights, norm, eps)
    tied = "lm_head.weight" not in weights or getattr(config, "tie_word_embeddings", True)
    head = table if tied else weights["lm_head.weight"]
    declare_logits(g, h, head, "transformer.wte" if tied and g.quant is None else None, model)


def _check(config) -> None:
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ExportError(f"GPT-2 activation {config.activation_function!r} is not supported (gelu_new is).")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(config, "reorder_and_upcast_attn", False):
        raise ExportError("GPT-2 variants with per-layer attention scaling are not supported.")


def _norm(g: GraphBuilder, x: str, weights, name: str, eps: float) -> str:
    return g.layer_norm(x, weights[f"{name}.weight"], weights[f"{name}.bias"], eps, name)


def _skip_norm(g: GraphBuilder, x: str, delta: str, weights, name: str, eps: float) -> tuple[str, str]:
    return g.skip_norm(x, delta, weights[f"{name}.weight"], weights[f"{name}.bias"], eps, name)


def _conv1d(g: GraphBuilder, x: str, weights, name: str) -> str:
    weight = weights[f"{name}.weight"].T  # Conv1D stores (in, out)
    return g.linear(x, weight, name, weights[f"{name}.bias"])


def _qkv(g: GraphBuilder, h: str, weights, p: str, model: ModelConfig) -> str:
    """c_attn projects to packed q|k|v; fold 1/sqrt(head_dim) into the q columns."""
    width = model.num_heads * model.head_dim
    scale = np.ones(3 * width, dtype=np.float32)
    scale[:width] = 1.0 / np.sqrt(model.head_dim)
    weight = weights[f"{p}.attn.c_attn.weight"].T * scale[:, None]
    return g.linear(h, weight, f"{p}.attn.c_attn", weights[f"{p}.attn.c_attn.bias"] * scale)
