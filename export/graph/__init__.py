"""to_onnx: Hugging Face weights -> an ONNX graph built op by op (no tracing).

In: a family's layers (llama.py, gpt2.py, bert.py, as export/architectures.py picks them), the
ModelConfig, the weights and a QuantSpec or None. Out: the ONNX proto and its GraphSpec.

Building the graph ourselves keeps it small and predictable: fused QKV and gate/up
projections, grouped-query attention without repeating K/V, logits for the last
position only while generating, and the I/O names the manifest records. Models without
a builder of their own are traced instead (traced.py), to the same plain contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from edge.manifest import GraphSpec, KVLayout, ModelConfig
from export.graph.builder import GraphBuilder
from export.graph.causal_lm import can_fuse, graph_spec
from export.quantize import QuantSpec

MODEL_FILE = "model.onnx"
INSPECT_FILE = "inspect.onnx"


@dataclass(frozen=True)
class Graph:
    proto: onnx.ModelProto
    spec: GraphSpec
    # role ("tokens", "positions") -> initializer names: where `edge inspect` finds the tables
    tables: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def build_graph(layers, model: ModelConfig, weights, config, quant: QuantSpec | None, inspect: bool = False) -> Graph:
    """The bundle's graph (fused attention where onnxruntime's kernels allow it), or with
    `inspect` the same model in plain ops that also outputs attention.{layer} (B, H, S, T).
    `layers`: the family's `build(g, model, weights, config, kv)` for decoders, or
    `build(g, model, weights, config, file) -> GraphSpec` for encoders."""
    file = INSPECT_FILE if inspect else MODEL_FILE
    if model.task != "text-generation":
        g = GraphBuilder("encoder", quant, capture_attention=inspect)
        spec = layers(g, model, weights, config, file)
        return Graph(g.model(), spec, g.tables)
    g = GraphBuilder("decoder", quant, capture_attention=inspect)
    kv = KVLayout(shared_buffer=can_fuse(g, model))
    layers(g, model, weights, config, kv)
    g.outputs.sort(key=lambda o: o.name != "logits")  # logits first, then the cache
    return Graph(g.model(), graph_spec(g, kv, file), g.tables)
