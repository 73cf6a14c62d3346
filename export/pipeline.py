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
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import ExportError
from edge.manifest import GraphSpec, Manifest, Quantization
from export import __version__, architectures, inspection, quality, writer
from export.graph import MODEL_FILE, build_decoder, build_inspection, traced
from export.quantize import QuantSpec
from export.source import Source, load_source, shareable_name

# why these two: README "Quantization: why this scheme", figures in benchmarks/quantization.md
QUANTIZE = {
    "int8": QuantSpec(bits=8),
    "int4": QuantSpec(bits=4, block_min=True, head_symmetric=True),
    "none": None,
}
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
        quant = QUANTIZE[quantize]
        if architectures.family(src.config) == architectures.TRACED:
            log(f"{model.architecture} has no native graph builder: tracing the transformers model")
            model, quant = traced.with_cache_shape(model, src.module), traced.plain_spec(quant)
        return _export_decoder(src, model, out, stage, quant, log)


@dataclass(frozen=True)
class SavedGraph:
    folder: Path
    files: list[str]
    spec: GraphSpec


@dataclass(frozen=True)
class Staged:
    """Graphs and tokenizer written to the staging folder, the manifest still without quality."""

    bundle: Path  # the bundle's folder: the quantized graph (fp32 with --quantize none)
    reference: SavedGraph | None  # the fp32 graph to measure against, when quantizing
    files: list[str]
    manifest: Manifest


def stage_graphs(src: Source, model, stage: Path, quant: QuantSpec | None, build, build_inspect, log,
                 **fields) -> Staged:
    """`build(quant) -> (onnx proto, GraphSpec)` run for fp32 and, if quantizing, for `quant`;
    `build_inspect(quant) -> (proto, GraphSpec, tables)` makes the inspection graph, which
    shares the bundle graph's weight bytes (None: no inspection graph); `fields`: extra
    Manifest fields (an encoder's pooling)."""
    log("building the fp32 graph")
    reference = save_graph(build, None, stage / ("reference" if quant else "bundle"))
    return stage_bundle(src, model, stage / "bundle", reference, quant, build, build_inspect, log, **fields)


def save_graph(build, quant: QuantSpec | None, folder: Path) -> SavedGraph:
    proto, spec = build(quant)
    return SavedGraph(folder, writer.save_graph(proto, folder, MODEL_FILE), spec)


def stage_bundle(src: Source, model, bundle_dir: Path, reference: SavedGraph, quant: QuantSpec | None, build,
                 build_inspect, log, **fields) -> Staged:
    """With `quant`, the quantized graph built in `bundle_dir` beside the fp32 `reference`
    (which stays where it is, for the next variant); without, the reference itself."""
    bundle = reference
    if quant is not None:
        log(f"building the {quant.scheme} graph ({quant.describe()})")
        bundle = save_graph(build, quant, bundle_dir)
    inspect, inspect_files = None, []
    if build_inspect is not None:
        log("building the inspection graph (attention weights for `edge inspect`)")
        proto, inspect_spec, tables = build_inspect(quant)
        inspect, inspect_files = inspection.save(proto, inspect_spec, tables, bundle.folder, MODEL_FILE,
                                                 causal=model.task == "text-generation")
        del proto
    (bundle.folder / TOKENIZER_FILE).write_text(src.tokenizer_json, encoding="utf-8")
    manifest = Manifest(model=model, graph=bundle.spec, tokenizer=src.tokens, quantization=_quantization(quant),
                        files={}, source=shareable_name(src.name), exporter_version=__version__, inspect=inspect,
                        **fields)
    return Staged(bundle.folder, reference if quant else None, bundle.files + inspect_files + [TOKENIZER_FILE],
                  manifest)


def _export_decoder(src: Source, model, out: Path, stage: Path, quant: QuantSpec | None, log) -> Manifest:
    staged = stage_graphs(src, model, stage, quant, decoder_builder(src, model), inspection_builder(src, model), log)
    return finish_decoder(src, staged, out, log)


def save_decoder(src: Source, model, quant: QuantSpec | None, folder: Path) -> SavedGraph:
    return save_graph(decoder_builder(src, model), quant, folder)


def write_decoder_bundle(src: Source, model, out: Path, bundle_dir: Path, reference: SavedGraph,
                         quant: QuantSpec | None, log) -> Manifest:
    """One quantization variant measured against an fp32 `reference` saved once (benchmarks)."""
    staged = stage_bundle(src, model, bundle_dir, reference, quant, decoder_builder(src, model),
                          inspection_builder(src, model), log)
    return finish_decoder(src, staged, out, log)


def finish_decoder(src: Source, staged: Staged, out: Path, log) -> Manifest:
    log("measuring quality on the held-out text")
    report = _measure(staged.manifest, staged.bundle, staged.reference, src.tokenizer_json)
    manifest = dataclasses.replace(staged.manifest, quality=report)
    return writer.finish(staged.bundle, manifest, staged.files, out)


def decoder_builder(src: Source, model):
    """`quant -> (proto, GraphSpec)`: edge's own graph, or the traced transformers model."""
    if architectures.family(src.config) == architectures.TRACED:
        return lambda quant: traced.build_traced(src.module, quant, MODEL_FILE)
    return lambda quant: build_decoder(model, src.weights, src.config, quant)


def inspection_builder(src: Source, model):
    """The inspection graph needs edge's own builder: traced models have none."""
    if architectures.family(src.config) == architectures.TRACED:
        return None
    return lambda quant: build_inspection(model, src.weights, src.config, quant)


def _quantization(quant: QuantSpec | None) -> Quantization:
    if quant is None:
        return Quantization(scheme="none", method="float32 weights")
    return Quantization(scheme=quant.scheme, method=quant.describe(), block_size=quant.block_size)


def _measure(manifest: Manifest, bundle_dir: Path, reference: SavedGraph | None, tokenizer_json: str):
    from tokenizers import Tokenizer  # exporter side: the oracle tokenizer is fine here

    tokenizer = Tokenizer.from_str(tokenizer_json)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    quantized = DecoderRunner.open(Bundle(bundle_dir, manifest))
    if reference is None:
        return quality.measure(quantized, None, encode)
    fp32 = dataclasses.replace(manifest, graph=reference.spec, inspect=None)
    return quality.measure(DecoderRunner.open(Bundle(reference.folder, fp32)), quantized, encode)
