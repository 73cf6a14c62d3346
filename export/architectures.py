"""Which architectures edge exports: one registry, from a config's model_type to how its
config maps onto the manifest and which module builds its graph.

In: a transformers config. Out: its `Family` (task, config reader, graph builder) and the
`edge.manifest.ModelConfig` it implies. Llama, Qwen2, GPT-2 and BERT have graphs built op
by op (export/graph/); any other causal LM transformers knows goes through the traced
fallback (export/graph/traced.py). Anything else fails here, before any weights are loaded.
A new architecture is one entry in FAMILIES: its config reader below, its graph module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edge.errors import ExportError
from edge.manifest import ModelConfig, Positional
from export.graph import bert, gpt2, llama

TEXT, EMBEDDINGS = "text-generation", "feature-extraction"


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values it covers
    task: str  # TEXT (a decoder) or EMBEDDINGS (an encoder)
    read: Callable[[Any, str], ModelConfig]  # (transformers config, task) -> the manifest's ModelConfig
    # (GraphBuilder, ModelConfig, weights, config, kv or graph file): the layers, op by op
    # (see export.graph.build_graph); None: traced from the transformers model instead
    build: Callable | None
    describe: str  # for the error that lists what is supported


def _llama(config, task: str) -> ModelConfig:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelConfig(
        architecture=config.model_type,
        task=task,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        context_length=config.max_position_embeddings,
        positional=Positional("rotary", rope_theta=rope_theta(config), rotary_dim=head_dim),
    )


def _gpt2(config, task: str) -> ModelConfig:
    return _multi_head("gpt2", task, config.n_layer, config.n_head, config.n_embd, config.vocab_size,
                       config.n_positions)


def _bert(config, task: str) -> ModelConfig:
    activation = getattr(config, "hidden_act", "gelu")
    positions = getattr(config, "position_embedding_type", "absolute")
    if activation != "gelu" or positions != "absolute":
        raise ExportError(f"BERT with hidden_act {activation!r} and {positions!r} positions is not supported yet; "
                          "edge exports exact-gelu BERT with absolute positions.")
    return _multi_head("bert", task, config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                       config.vocab_size, config.max_position_embeddings)


def _multi_head(architecture: str, task: str, layers: int, heads: int, hidden: int, vocab: int,
                context: int) -> ModelConfig:
    """Every head with its own K and V, learned positions (GPT-2, BERT)."""
    return ModelConfig(architecture=architecture, task=task, num_layers=layers, num_heads=heads,
                       num_kv_heads=heads, head_dim=hidden // heads, hidden_size=hidden, vocab_size=vocab,
                       context_length=context, positional=Positional("learned"))


def _traced(config, task: str) -> ModelConfig:
    """Shapes as the config names them; the traced pipeline replaces kv_heads and head_dim
    with the ones the model's cache really has."""
    heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    params = config.to_dict()
    positional = Positional("learned")
    if any(key in params for key in ("rope_theta", "rope_parameters", "rotary_pct", "rotary_dim")):
        rope = getattr(config, "rope_parameters", None) or {}
        share = rope.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) \
            or getattr(config, "rotary_pct", None) or 1.0
        positional = Positional("rotary", rope_theta=rope_theta(config), rotary_dim=int(head_dim * share))
    return ModelConfig(
        architecture=config.model_type,
        task=task,
        num_layers=_first(config, "num_hidden_layers", "n_layer", "num_layers"),
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=config.vocab_size,
        context_length=_first(config, "max_position_embeddings", "n_positions", "max_sequence_length"),
        positional=positional,
    )


FAMILIES = (
    Family("llama", ("llama", "qwen2"), TEXT, _llama, llama.build,
           "Llama family (llama, qwen2: SmolLM2, TinyLlama, Qwen2/2.5)"),
    Family("gpt2", ("gpt2",), TEXT, _gpt2, gpt2.build, "GPT-2 (gpt2)"),
    Family("bert", ("bert",), EMBEDDINGS, _bert, bert.build, "BERT encoders (bert)"),
)
# causal LMs without a native graph builder: any model_type transformers has a causal LM for
TRACED = Family("traced", (), TEXT, _traced, None, "and other transformers causal LMs through a traced graph")
BY_MODEL_TYPE = {model_type: f for f in FAMILIES for model_type in f.model_types}
SUPPORTED = ", ".join(f.describe for f in (*FAMILIES, TRACED))


def family(config) -> Family:
    model_type = getattr(config, "model_type", None)
    found = BY_MODEL_TYPE.get(model_type)
    if found is None and _is_causal_lm(model_type):
        return TRACED
    if found is None:
        raise ExportError(f"architecture {model_type!r} is not supported. edge exports: {SUPPORTED}.")
    return found


def _is_causal_lm(model_type: str | None) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def check(config, task: str | None) -> str:
    """The task for this config: given, or implied by the architecture; mismatch is an error."""
    kind = family(config)
    if task is not None and task != kind.task:
        raise ExportError(f"{config.model_type} models export as --task {kind.task}, not {task}.")
    if kind is not TRACED:  # the traced model computes its own rotary variant
        _check_rope(config)
    return kind.task


def model_config(config, task: str, max_context: int | None = None) -> ModelConfig:
    model = family(config).read(config, task)
    if max_context is not None:
        if max_context < 1:
            raise ExportError(f"--max-context must be positive, got {max_context}.")
        model = replace(model, context_length=min(max_context, model.context_length))
    return model


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_rope(config) -> None:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ExportError(f"rope scaling {rope_type!r} is not supported yet; only plain rotary is.")


def _first(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ExportError(f"{config.model_type} config has none of {', '.join(names)}; edge cannot size its graph.")
