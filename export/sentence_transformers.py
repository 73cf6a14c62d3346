"""How an encoder bundle pools, read from the sentence-transformers files beside the model.

In: the model's folder (modules.json, 1_Pooling/config.json, sentence_bert_config.json; for
a hub id those files alone, fetched) and its `ModelConfig`. Out: the manifest's `Pooling`:
mean or CLS, whether to L2-normalise, the max sequence length. A plain transformers encoder
gets mean pooling over at most its context length, and the manifest says it was a default.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge.errors import ExportError
from edge.manifest import ModelConfig, Pooling
from export.source import Source, locate

POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
TRANSFORMER = "sentence_transformers.models.Transformer"
FILES = ["modules.json", "sentence_bert_config.json", "*/config.json"]


def folder(src: Source) -> Path | None:
    """Where the sentence-transformers files are: the source folder, or for a hub id those
    files alone fetched from the hub (a model without them: None, default pooling)."""
    where = locate(src.name)
    if src.folder is not None or where.kind != "hub":
        return src.folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(src.name, allow_patterns=FILES, local_files_only=not where.online))


def read_pooling(folder: Path | None, model: ModelConfig) -> Pooling:
    """Pooling from the sentence-transformers files in `folder`, else mean over the context."""
    modules = _json(folder / "modules.json") if folder is not None else None
    if modules is None:
        return Pooling(mode="mean", normalize=False, max_length=model.context_length, source="default")
    kinds = [m.get("type") for m in modules]
    unknown = [k for k in kinds if k not in (TRANSFORMER, POOLING, NORMALIZE)]
    if unknown:
        raise ExportError(f"sentence-transformers module(s) {unknown} are not supported; edge exports "
                          "Transformer + Pooling (+ Normalize) models.")
    pool = next((m for m in modules if m.get("type") == POOLING), None)
    config = _json(folder / pool["path"] / "config.json") if pool else {"pooling_mode_mean_tokens": True}
    settings = _json(folder / "sentence_bert_config.json") or {}
    length = min(int(settings.get("max_seq_length") or model.context_length), model.context_length)
    return Pooling(mode=_mode(config or {}), normalize=NORMALIZE in kinds, max_length=length,
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
