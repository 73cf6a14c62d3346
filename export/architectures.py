"""Which architectures edge exports, and how their configs map onto the manifest.

In: a transformers config. Out: the task it implies and an `edge.manifest.ModelConfig`.
Llama, Qwen2, GPT-2 and BERT have graphs built op by op (export/graph/); any other causal
LM transformers knows goes through the traced fallback (export/graph/traced.py). Anything
else fails here, before any weights are loaded.
"""

from __future__ import annotations

from edge.errors import ExportError
from edge.manifest import ModelConfig, Positional

DECODERS = {"llama": "llama", "qwen2": "llama", "gpt2": "gpt2"}  # model_type -> graph family
ENCODERS = {"bert": "bert"}
TRACED = "traced"  # the family of causal LMs without a native graph builder
SUPPORTED = ("Llama family (llama, qwen2: SmolLM2, TinyLlama, Qwen2/2.5), GPT-2 (gpt2), BERT encoders (bert), "
             "and other transformers causal LMs through a traced graph")


def family(config) -> str:
    model_type = getattr(config, "model_type", None)
    found = DECODERS.get(model_type) or ENCODERS.get(model_type)
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
    implied = "feature-extraction" if kind in ENCODERS.values() else "text-generation"
    if task is not None and task != implied:
        raise ExportError(f"{config.model_type} models export as --task {implied}, not {task}.")
    if kind != TRACED:  # the traced model computes its own rotary variant
        _check_rope(config)
    return implied


def model_config(config, task: str, max_context: int | None = None) -> ModelConfig:
    kind = family(config)
    builders = {"llama": _llama, "gpt2": _gpt2, "bert": _bert, TRACED: _traced}
    model = builders[kind](config, task)
    if max_context is not None:
        if max_context < 1:
            raise ExportError(f"--max-context must be positive, got {max_context}.")
        limit = model.context_length
        model = _replace_context(model, min(max_context, limit))
    return model


def _replace_context(model: ModelConfig, context: int) -> ModelConfig:
    from dataclasses import replace

    return replace(model, context_length=context)


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_rope(config) -> None:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ExportError(f"rope scaling {rope_type!r} is not supported yet; only plain rotary is.")


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
    return ModelConfig(
        architecture="gpt2",
        task=task,
        num_layers=config.n_layer,
        num_heads=config.n_head,
        num_kv_heads=config.n_head,
        head_dim=config.n_embd // config.n_head,
        hidden_size=config.n_embd,
        vocab_size=config.vocab_size,
        context_length=config.n_positions,
        positional=Positional("learned"),
    )


def _bert(config, task: str) -> ModelConfig:
    activation = getattr(config, "hidden_act", "gelu")
    positions = getattr(config, "position_embedding_type", "absolute")
    if activation != "gelu" or positions != "absolute":
        raise ExportError(f"BERT with hidden_act {activation!r} and {positions!r} positions is not supported yet; "
                          "edge exports exact-gelu BERT with absolute positions.")
    return ModelConfig(
        architecture="bert",
        task=task,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        context_length=config.max_position_embeddings,
        positional=Positional("learned"),
    )


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


def _first(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ExportError(f"{config.model_type} config has none of {', '.join(names)}; edge cannot size its graph.")
