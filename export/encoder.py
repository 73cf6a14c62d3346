"""Export an encoder (feature-extraction): source -> graph -> quantize -> cosine quality -> writer.

In: a loaded `Source` (BERT family) and its `ModelConfig`. Out: a bundle whose manifest
records how to pool (mean or CLS), whether to L2-normalise and the max sequence length,
read from the sentence-transformers files beside the model (modules.json,
1_Pooling/config.json, sentence_bert_config.json; fetched for a hub id); a plain transformers encoder gets mean
pooling over at most its context length, and the manifest says it was a default.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx

from edge.bundle import Bundle
from edge.embeddings.model import EmbeddingModel
from edge.engine.encoder_runner import EncoderRunner
from edge.errors import ExportError
from edge.manifest import GraphSpec, Manifest, ModelConfig, Pooling
from edge.tokenizer import load_tokenizer
from export import quality, writer
from export.graph import INSPECT_FILE, MODEL_FILE
from export.graph.bert import build_encoder
from export.graph.builder import GraphBuilder
from export.pipeline import QUANTIZE, TOKENIZER_FILE, stage_graphs
from export.quantize import QuantSpec
from export.source import Source, locate

# Encoders run thousands of rows per call, where MatMulNBits' work per block of weights (a
# scale and a block sum per 32 products), not the weight bytes, sets the pace: 8-bit blocks
# of 64 make MiniLM ~10% faster (paragraphs 170 -> 190/s) for cosine to fp32 0.99966 ->
# 0.99944 (mean) and the same retrieval agreement (benchmarks/README.md). The token table
# keeps blocks of 32: it is only looked up.
ENCODER_BLOCKS = (("encoder.layer.", 64),)

ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_FILES = ["modules.json", "sentence_bert_config.json", "*/config.json"]


def encoder_spec(quant: QuantSpec | None) -> QuantSpec | None:
    """The 8-bit spec with the encoder's layers in blocks of 64 (see ENCODER_BLOCKS)."""
    return quant if quant is None or quant.bits != 8 else dataclasses.replace(quant, block_sizes=ENCODER_BLOCKS)


def export_encoder(src: Source, model: ModelConfig, out: Path, stage: Path, quantize: str, log) -> Manifest:
    pooling = read_pooling(sentence_transformers_folder(src), model)
    log(f"pooling: {pooling.mode}{', normalised' if pooling.normalize else ''}, max {pooling.max_length} tokens "
        f"({pooling.source})")
    staged = stage_graphs(src, model, stage, encoder_spec(QUANTIZE[quantize]), lambda quant: _build(model, src, quant),
                          lambda quant: _build_inspection(model, src, quant), log,
                          pooling=pooling)
    log("measuring cosine to fp32 on the shipped sentences")
    tokenizer = load_tokenizer(staged.bundle / TOKENIZER_FILE)
    models = [EmbeddingModel(staged.manifest, tokenizer, EncoderRunner.open(Bundle(folder, staged.manifest)))
              for folder in (staged.reference.folder if staged.reference else staged.bundle, staged.bundle)]
    manifest = dataclasses.replace(staged.manifest, quality=quality.measure_cosine(*models))
    return writer.finish(staged.bundle, manifest, staged.files, out)


def _build(model: ModelConfig, src: Source, quant: QuantSpec | None) -> tuple[onnx.ModelProto, GraphSpec]:
    g = GraphBuilder("encoder", quant)
    spec = build_encoder(g, model, src.weights, src.config, MODEL_FILE)
    return g.model(), spec


def sentence_transformers_folder(src: Source) -> Path | None:
    """Where the sentence-transformers files are: the source folder, or for a hub id those
    files alone fetched from the hub (a model without them: None, default pooling)."""
    if src.folder is not None or locate(src.name).kind != "hub":
        return src.folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(src.name, allow_patterns=ST_FILES))


def _build_inspection(model: ModelConfig, src: Source, quant: QuantSpec | None):
    """The same encoder with plain attention whose probabilities are graph outputs."""
    g = GraphBuilder("encoder", quant, capture_attention=True)
    spec = build_encoder(g, model, src.weights, src.config, INSPECT_FILE)
    return g.model(), spec, g.tables


def read_pooling(folder: Path | None, model: ModelConfig) -> Pooling:
    """Pooling from the sentence-transformers files in `folder`, else mean over the context."""
    modules = _json(folder / "modules.json") if folder is not None else None
    if modules is None:
        return Pooling(mode="mean", normalize=False, max_length=model.context_length, source="default")
    kinds = [m.get("type") for m in modules]
    unknown = [k for k in kinds if k not in (ST_TRANSFORMER, ST_POOLING, ST_NORMALIZE)]
    if unknown:
        raise ExportError(f"sentence-transformers module(s) {unknown} are not supported; edge exports "
                          "Transformer + Pooling (+ Normalize) models.")
    pool = next((m for m in modules if m.get("type") == ST_POOLING), None)
    config = _json(folder / pool["path"] / "config.json") if pool else {"pooling_mode_mean_tokens": True}
    settings = _json(folder / "sentence_bert_config.json") or {}
    length = min(int(settings.get("max_seq_length") or model.context_length), model.context_length)
    return Pooling(mode=_mode(config or {}), normalize=ST_NORMALIZE in kinds, max_length=length,
                   source="sentence-transformers")


def _mode(config: dict) -> str:
    """Exactly one of mean or CLS; max, mean-sqrt-len and combinations are refused."""
    modes = [key for key, value in config.items() if key.startswith("pooling_mode_") and value]
    names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    if len(modes) != 1 or modes[0] not in names:
        raise ExportError(f"sentence-transformers pooling {modes} is not supported; edge pools by mean or CLS.")
    return names[modes[0]]


def _json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"could not read {path} ({exc.__class__.__name__}). Fix or remove the file.") from None
