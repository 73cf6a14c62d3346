"""The bundle manifest: one schema, shared by the exporter (writes) and the runtime (reads).

`manifest.json` is plain JSON. `Manifest.from_dict` turns it into frozen dataclasses and
rejects anything it does not understand with a `BundleError` that says how to fix it, so
the runtime never guesses a head count, a KV layout or an input name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import BundleError

FORMAT = "edge-bundle"
# 2: int8 decoder graphs may take token rows (inputs_embeds), see edge/engine/token_rows.py;
# 3: the quantization records its recipe, target CPU and the CPU features its kernels need
SCHEMA_VERSION = 3
READS_VERSIONS = (1, 2, 3)  # version 1 bundles (token ids only) still load; 1 and 2 lack the CPU fields
MANIFEST_FILE = "manifest.json"
RETIRED = ("extra",)  # top-level fields bundles of earlier exporters carry (always empty), skipped on read

TASKS = ("text-generation", "feature-extraction")
POSITIONAL_KINDS = ("learned", "rotary", "sinusoidal")


@dataclass(frozen=True)
class Positional:
    """How token order enters the model."""

    kind: str  # one of POSITIONAL_KINDS
    rope_theta: float | None = None  # rotary only: the base of the frequencies
    rotary_dim: int | None = None  # rotary only: how many of head_dim's channels rotate


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # "llama", "gpt2", "bert"
    task: str  # one of TASKS
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    context_length: int
    positional: Positional


@dataclass(frozen=True)
class KVLayout:
    """Names and axes of the KV cache tensors; `{layer}` is replaced by the layer index."""

    past_key: str = "past.{layer}.key"
    past_value: str = "past.{layer}.value"
    present_key: str = "present.{layer}.key"
    present_value: str = "present.{layer}.value"
    axes: tuple[str, ...] = ("batch", "kv_heads", "seq", "head_dim")
    dtype: str = "float32"
    # True: past and present are one preallocated buffer per tensor, bound to both, and the
    # graph takes seqlens_k / total_sequence_length; False: present = concat(past, new).
    shared_buffer: bool = False


@dataclass(frozen=True)
class GraphSpec:
    """The ONNX file and the exact input/output names the runtime feeds and reads."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kv: KVLayout | None = None  # decoders only
    builder: str = "edge"  # who made the graph: edge's own builder, or the traced fallback


@dataclass(frozen=True)
class TensorRef:
    """Where a weight's bytes sit in one of the bundle's files, so numpy can map it directly
    (the runtime never parses ONNX protobufs)."""

    file: str
    offset: int  # bytes from the start of `file`
    shape: tuple[int, ...]
    dtype: str  # a numpy dtype name: "float32", "int8"


@dataclass(frozen=True)
class Inspection:
    """What `edge inspect` reads beyond the generation graph, and where an int8 decoder's
    token rows are (its graph takes inputs_embeds: edge/engine/token_rows.py reads `embedding` and
    `embedding_scales`). Version 1 bundles without it still load; inspecting attention or
    embeddings then asks for a re-export."""

    embedding: TensorRef  # (vocab, hidden) float32, or int8 codes when quantized
    embedding_scales: TensorRef | None = None  # (vocab, hidden / block) float32, int8 only
    positions: TensorRef | None = None  # learned positions: (context, hidden) float32
    # The same model in plain ops that also outputs attention.{layer} (batch, heads, seq, total);
    # its weights point into the generation graph's data file wherever the bytes are equal.
    graph: GraphSpec | None = None
    causal: bool = True  # False for encoders: every token sees every other


@dataclass(frozen=True)
class TokenizerSpec:
    file: str = "tokenizer.json"
    bos_token: str | None = None
    bos_token_id: int | None = None
    eos_token: str | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    add_bos: bool = False  # prepend BOS to a raw prompt (Llama-1/TinyLlama style)
    chat_template: str | None = None

    def bos_prefix(self) -> list[int]:
        """What plain text starts with: [BOS] when the model expects it, else nothing."""
        return [self.bos_token_id] if self.add_bos and self.bos_token_id is not None else []


@dataclass(frozen=True)
class Pooling:
    """How an encoder's token vectors become one sentence vector."""

    mode: str  # "mean" or "cls"
    normalize: bool
    max_length: int
    source: str  # "sentence-transformers" (read from its files) or "default"


@dataclass(frozen=True)
class Quantization:
    scheme: str  # "none", "int8", "int4" (bits of the linear layers)
    method: str  # human-readable: which op, which granularity
    block_size: int | None = None
    recipe: str = ""  # `edge export --quantize`: "int8", "int4", "pi4", "none" ("": schema 1-2)
    target: str = ""  # `edge export --target`: "pi4", "pi5", "native", "portable" ("": none asked)
    # architecture -> /proc/cpuinfo flags the bundle's kernels need to run packed, e.g.
    # {"aarch64": ("asimddp",)}; an architecture not listed: no need known. None: not recorded
    # (schema 1-2), {}: needs nothing (fp32)
    cpu_features: dict[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Quality:
    """What the exporter measured: the quantized graph against the fp32 one."""

    text: str  # what was measured on (file name or description)
    tokens: int = 0
    perplexity_fp32: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None  # teacher-forced, on the held-out text
    greedy_agreement: float | None = None  # free-running greedy continuations
    cosine_mean: float | None = None  # encoders
    cosine_min: float | None = None


@dataclass(frozen=True)
class Manifest:
    model: ModelConfig
    graph: GraphSpec
    tokenizer: TokenizerSpec
    quantization: Quantization
    files: dict[str, str]  # relative path -> sha256
    source: str = ""  # hub id, or the source file's or folder's name (no local path)
    exporter_version: str = ""
    quality: Quality | None = None
    pooling: Pooling | None = None
    inspect: Inspection | None = None
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION

    @property
    def is_decoder(self) -> bool:
        return self.model.task == "text-generation"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        _check_header(data)
        data = {key: value for key, value in data.items() if key not in RETIRED}
        try:
            return _build(cls, data)
        except (TypeError, KeyError, ValueError) as exc:
            raise BundleError(
                f"manifest.json is malformed ({exc}). Re-export the bundle with `edge export`."
            ) from None

    @classmethod
    def read(cls, bundle_dir: Path) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(
                f"{bundle_dir} has no {MANIFEST_FILE}: it is not an edge bundle. "
                "Create one with `edge export SOURCE -o DIR`."
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"{path} is not valid JSON ({exc.__class__.__name__}). Re-export the bundle."
            ) from None
        return cls.from_dict(data)


def _check_header(data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError("manifest.json is not an edge bundle manifest. Re-export with `edge export`.")
    version = data.get("schema_version")
    if version not in READS_VERSIONS:
        raise BundleError(
            f"bundle schema version {version!r} is not supported by this edge (it reads versions "
            f"{', '.join(map(str, READS_VERSIONS))}). Re-export the bundle with this edge, or install a matching edge."
        )


def _build(kind: type, value: Any) -> Any:
    """Rebuild a (nested) frozen dataclass from plain JSON data, rejecting unknown keys."""
    if not dataclasses.is_dataclass(kind):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{kind.__name__} must be an object")
    hints = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(value) - set(hints)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in {kind.__name__}")
    kwargs = {}
    for name, raw in value.items():
        kwargs[name] = _convert(hints[name].type, raw)
    result = kind(**kwargs)
    _validate(result)
    return result


_NESTED = {
    "Positional": Positional,
    "ModelConfig": ModelConfig,
    "KVLayout": KVLayout,
    "GraphSpec": GraphSpec,
    "TensorRef": TensorRef,
    "Inspection": Inspection,
    "TokenizerSpec": TokenizerSpec,
    "Pooling": Pooling,
    "Quantization": Quantization,
    "Quality": Quality,
}


def _convert(annotation: str, raw: Any) -> Any:
    """Map JSON values onto the annotated type: nested dataclasses, tuples, optionals."""
    if raw is None:
        return None
    name = annotation.split(" | ")[0]
    if name in _NESTED:
        return _build(_NESTED[name], raw)
    if name.startswith("dict[str, tuple"):
        return {key: tuple(values) for key, values in raw.items()}
    if name.startswith("tuple"):
        return tuple(raw)
    return raw


def _validate(obj: Any) -> None:
    if isinstance(obj, ModelConfig):
        if obj.task not in TASKS:
            raise ValueError(f"task {obj.task!r} is not one of {TASKS}")
        if obj.num_heads % obj.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
    if isinstance(obj, Positional) and obj.kind not in POSITIONAL_KINDS:
        raise ValueError(f"positional kind {obj.kind!r} is not one of {POSITIONAL_KINDS}")
