"""`edge export`: source -> to_onnx -> quantize -> quality -> writer, in one function.

In: a SOURCE (hub id, folder, .gguf), an output folder, a quantization choice. Out: a
bundle folder the runtime can load, with the quality it measured in its manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.bundle import Bundle
from edge.decoder import Decoder
from edge.errors import ExportError
from edge.manifest import Manifest, Quantization
from export import __version__, architectures, inspection, quality, writer
from export.graph import MODEL_FILE, build_decoder, build_inspection
from export.quantize import QuantSpec
from export.source import Source, load_source

QUANTIZE = {"int8": QuantSpec(bits=8), "int4": QuantSpec(bits=4), "none": None}
TOKENIZER_FILE = "tokenizer.json"


def export_model(
    source: str,
    out: Path,
    quantize: str = "int8",
    max_context: int | None = None,
    task: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Manifest:
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}.")
    out = Path(out).expanduser()
    with writer.staging(out) as stage:
        log(f"reading {source}")
        src = load_source(source, task)
        model = architectures.model_config(src.config, src.task, max_context)
        if model.task != "text-generation":
            from export.encoder import export_encoder  # encoders: the embeddings pipeline

            return export_encoder(src, model, out, stage, quantize, log)
        return _export_decoder(src, model, out, stage, QUANTIZE[quantize], log)


@dataclass(frozen=True)
class Staged:
    """Graphs and tokenizer written to the staging folder, the manifest still without quality."""

    bundle: Path  # the bundle's folder: the quantized graph (fp32 with --quantize none)
    reference: Path | None  # the fp32 graph to measure against, when quantizing
    files: list[str]
    manifest: Manifest


def stage_graphs(src: Source, model, stage: Path, quant: QuantSpec | None, build, build_inspect, log,
                 **fields) -> Staged:
    """`build(quant) -> (onnx proto, GraphSpec)` run for fp32 and, if quantizing, for `quant`;
    `build_inspect(quant) -> (proto, GraphSpec, tables)` makes the inspection graph, which
    shares the bundle graph's weight bytes; `fields`: extra Manifest fields (an encoder's pooling)."""
    bundle_dir, reference_dir = stage / "bundle", stage / "reference"
    log("building the fp32 graph")
    proto, spec = build(None)
    files = writer.save_graph(proto, reference_dir if quant else bundle_dir, MODEL_FILE)
    del proto
    if quant is not None:
        log(f"building the {quant.scheme} graph ({quant.describe()})")
        proto, spec = build(quant)
        files = writer.save_graph(proto, bundle_dir, MODEL_FILE)
        del proto
    log("building the inspection graph (attention weights for `edge inspect`)")
    proto, inspect_spec, tables = build_inspect(quant)
    inspect, inspect_files = inspection.save(proto, inspect_spec, tables, bundle_dir, MODEL_FILE,
                                             causal=model.task == "text-generation")
    del proto
    (bundle_dir / TOKENIZER_FILE).write_text(src.tokenizer_json, encoding="utf-8")
    manifest = Manifest(model=model, graph=spec, tokenizer=src.tokens, quantization=_quantization(quant), files={},
                        source=src.name, exporter_version=__version__, inspect=inspect, **fields)
    return Staged(bundle_dir, reference_dir if quant else None, files + inspect_files + [TOKENIZER_FILE], manifest)


def _export_decoder(src: Source, model, out: Path, stage: Path, quant: QuantSpec | None, log) -> Manifest:
    staged = stage_graphs(src, model, stage, quant, lambda q: build_decoder(model, src.weights, src.config, q),
                          lambda q: build_inspection(model, src.weights, src.config, q), log)
    log("measuring quality on the held-out text")
    report = _measure(staged.manifest, staged.bundle, staged.reference, src.tokenizer_json)
    manifest = dataclasses.replace(staged.manifest, quality=report)
    return writer.finish(staged.bundle, manifest, staged.files, out)


def _quantization(quant: QuantSpec | None) -> Quantization:
    if quant is None:
        return Quantization(scheme="none", method="float32 weights")
    return Quantization(scheme=quant.scheme, method=quant.describe(), block_size=quant.block_size)


def _measure(manifest: Manifest, bundle_dir: Path, reference_dir: Path | None, tokenizer_json: str):
    from tokenizers import Tokenizer  # exporter side: the oracle tokenizer is fine here

    tokenizer = Tokenizer.from_str(tokenizer_json)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    quantized = Decoder.open(Bundle(bundle_dir, manifest))
    if reference_dir is None:
        return quality.measure(quantized, None, encode)
    return quality.measure(Decoder.open(Bundle(reference_dir, manifest)), quantized, encode)
