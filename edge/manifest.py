"""The bundle manifest: one schema, shared by the exporter (writes) and the runtime (reads).

`manifest.json` is plain JSON. `Manifest.from_dict` turns it into frozen dataclasses and
rejects anything it does not understand with a `BundleError` that says how to fix it, so
the runtime never guesses a head count, a KV layout or an input name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import jsonfile
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
class Sampling:
    """The sampling the source model recommends (Hugging Face's generation_config.json, when
    it sets do_sample), used for every option a caller leaves out; a None field is off."""

    source: str  # where it came from: "generation_config.json"
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def describe(self) -> str:
        """Example: "from generation_config.json: temperature 0.2, top_p 0.9" """
        values = [f"{f.name} {getattr(self, f.name):g}" for f in dataclasses.fields(self)
                  if f.name != "source" and getattr(self, f.name) is not None]
        return f"from {self.source}: {', '.join(values) or 'sampling with every filter off'}"


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
    sampling: Sampling | None = None  # None: the source recommends no sampling (greedy by default)
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
            return _build(cls, data, "")
        except ValueError as exc:
            raise BundleError(f"manifest.json is malformed: {exc}. Re-export the bundle with `edge export`.") from None

    @classmethod
    def read(cls, bundle_dir: Path) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_FILE
        try:
            data = jsonfile.loads(path.read_bytes())
        except FileNotFoundError:
            raise BundleError(
                f"{bundle_dir} has no {MANIFEST_FILE}: it is not an edge bundle. "
                "Create one with `edge export SOURCE -o DIR`."
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} cannot be read ({exc}). Re-export the bundle.") from None
        return cls.from_dict(data)


def _check_header(data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError("manifest.json is not an edge bundle manifest. Re-export with `edge export`.")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READS_VERSIONS:
        raise BundleError(
            f"bundle schema version {version!r} is not supported by this edge (it reads versions "
            f"{', '.join(map(str, READS_VERSIONS))}). Re-export the bundle with this edge, or install a matching edge."
        )


def _build(kind: type, value: Any, where: str) -> Any:
    """Rebuild a (nested) frozen dataclass from plain JSON data, checking every field's type
    and range (ValueError naming the field, e.g. "field model.num_kv_heads must be ...")."""
    if not isinstance(value, dict):
        raise ValueError(f"field {where or 'manifest'} must be an object")
    hints = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(value) - set(hints)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in {where or 'the manifest'}")
    kwargs = {name: _convert(hints[name].type, raw, f"{where}.{name}".lstrip(".")) for name, raw in value.items()}
    try:
        result = kind(**kwargs)
    except TypeError:  # a required field is missing
        missing = [n for n, f in hints.items() if n not in value and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ValueError(f"field {where + '.' if where else ''}{missing[0]} is missing") from None
    for name, message in _problems(result):
        raise ValueError(f"field {where + '.' if where else ''}{name} {message}")
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
    "Sampling": Sampling,
}
_SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def _convert(annotation: str, raw: Any, where: str) -> Any:
    """Map a JSON value onto the annotated type (nested dataclasses, tuples, dicts,
    optionals), or ValueError naming the field. Example: ("int", "4", "model.num_layers")
    -> ValueError("field model.num_layers must be an integer, got '4'")"""
    name, *rest = annotation.split(" | ")
    if raw is None:
        if rest == ["None"]:
            return None
        raise ValueError(f"field {where} must not be null")
    if name in _NESTED:
        return _build(_NESTED[name], raw, where)
    if name.startswith(("tuple", "dict")):
        container, item = (list, name[6:-6]) if name.startswith("tuple") else (dict, name[5:-1].split(", ", 1)[1])
        if not isinstance(raw, container):
            raise ValueError(f"field {where} must be {'an array' if container is list else 'an object'}")
        if container is dict:
            return {str(k): _convert(item, v, f"{where}.{k}") for k, v in raw.items()} if item != "Any" else raw
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(raw))
    if isinstance(raw, bool) != (name == "bool") or not isinstance(raw, _SCALARS[name]):
        raise ValueError(f"field {where} must be {_KINDS[name]}, got {_short(raw)}")
    if name == "float" and not math.isfinite(raw):
        raise ValueError(f"field {where} must be a finite number, got {raw!r}")
    return raw


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Upper bounds far above any model edge can run, low enough that nothing is allocated from
# a hostile number (num_layers 1e9 used to allocate for 40 s before a MemoryError).
LIMITS = {"num_layers": 1024, "num_heads": 1024, "num_kv_heads": 1024, "head_dim": 4096,
          "hidden_size": 1 << 17, "vocab_size": 1 << 22, "context_length": 1 << 20}
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _problems(obj: Any) -> Iterator[tuple[str, str]]:
    """(field, what is wrong) for values of the right type but out of range."""
    if isinstance(obj, ModelConfig):
        if obj.task not in TASKS:
            yield "task", f"must be one of {TASKS}, got {_short(obj.task)}"
        for name, top in LIMITS.items():
            value = getattr(obj, name)
            if not 1 <= value <= top:
                yield name, f"must be between 1 and {top}, got {value}"
        if obj.num_heads % obj.num_kv_heads:
            yield "num_kv_heads", f"must divide num_heads ({obj.num_heads}), got {obj.num_kv_heads}"
        if (obj.positional.rotary_dim or 0) > obj.head_dim:
            yield "positional.rotary_dim", f"must be at most head_dim ({obj.head_dim}), got {obj.positional.rotary_dim}"
    elif isinstance(obj, Sampling):
        for field_ in dataclasses.fields(obj)[1:]:
            value = getattr(obj, field_.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                yield field_.name, f"must be a number or null, got {_short(value)}"
    elif isinstance(obj, Positional):
        if obj.kind not in POSITIONAL_KINDS:
            yield "kind", f"must be one of {POSITIONAL_KINDS}, got {_short(obj.kind)}"
        if obj.rope_theta is not None and obj.rope_theta <= 0:
            yield "rope_theta", f"must be > 0, got {obj.rope_theta}"
        if obj.rotary_dim is not None and not (2 <= obj.rotary_dim <= LIMITS["head_dim"] and obj.rotary_dim % 2 == 0):
            yield "rotary_dim", f"must be an even number between 2 and {LIMITS['head_dim']}, got {obj.rotary_dim}"
    elif isinstance(obj, TensorRef):
        if obj.offset < 0:
            yield "offset", f"must be >= 0, got {obj.offset}"
        if not 1 <= len(obj.shape) <= 4 or any(not 0 <= d <= 1 << 31 for d in obj.shape):
            yield "shape", f"must be 1 to 4 sizes between 0 and 2**31, got {_short(list(obj.shape))}"
        if obj.dtype not in DTYPES:
            yield "dtype", f"must be one of {DTYPES}, got {_short(obj.dtype)}"
    elif isinstance(obj, KVLayout):
        if sorted(obj.axes) != sorted(KVLayout.axes):
            yield "axes", f"must order {list(KVLayout.axes)}, got {_short(list(obj.axes))}"
        if obj.dtype not in ("float32", "float16"):
            yield "dtype", f"must be float32 or float16, got {_short(obj.dtype)}"
    elif isinstance(obj, TokenizerSpec):
        ids = [("bos_token_id", obj.bos_token_id), ("pad_token_id", obj.pad_token_id),
               *(("eos_token_ids", i) for i in obj.eos_token_ids)]
        for name, value in ids:
            if value is not None and not 0 <= value < LIMITS["vocab_size"]:
                yield name, f"must be a token id between 0 and {LIMITS['vocab_size'] - 1}, got {value}"
    elif isinstance(obj, Pooling):
        if obj.mode not in ("mean", "cls"):
            yield "mode", f"must be mean or cls, got {_short(obj.mode)}"
        if not 1 <= obj.max_length <= LIMITS["context_length"]:
            yield "max_length", f"must be between 1 and {LIMITS['context_length']}, got {obj.max_length}"
    elif isinstance(obj, Quantization):
        if obj.block_size is not None and not 1 <= obj.block_size <= 1 << 16:
            yield "block_size", f"must be between 1 and 65536, got {obj.block_size}"
    elif isinstance(obj, Quality):
        yield from _quality_problems(obj)
    elif isinstance(obj, Manifest):
        for name, digest in obj.files.items():
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                yield f"files.{name}", "must be a sha256 (64 lowercase hex digits)"


def _quality_problems(q: Quality) -> Iterator[tuple[str, str]]:
    if q.tokens < 0:
        yield "tokens", f"must be >= 0, got {q.tokens}"
    for name in ("perplexity", "perplexity_fp32"):
        value = getattr(q, name)
        if value is not None and value <= 0:
            yield name, f"must be > 0, got {value}"
    if (q.perplexity is None) != (q.perplexity_fp32 is None):
        yield "perplexity", "and perplexity_fp32 must be given together"
    for name in ("top1_agreement", "greedy_agreement"):
        value = getattr(q, name)
        if value is not None and not 0 <= value <= 1:
            yield name, f"must be between 0 and 1, got {value}"
    for name in ("cosine_mean", "cosine_min"):
        value = getattr(q, name)
        if value is not None and not -1 <= value <= 1:
            yield name, f"must be between -1 and 1, got {value}"
