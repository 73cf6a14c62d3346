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
from edge.manifest import GraphSpec, Manifest, Quantization
from export import __version__, architectures, quality, writer
from export.graph import MODEL_FILE, build_decoder, traced
from export.quantize import QuantSpec
from export.source import Source, load_source

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


def _export_decoder(src: Source, model, out: Path, stage: Path, quant: QuantSpec | None, log) -> Manifest:
    log("building the fp32 graph")
    reference = save_decoder(src, model, None, stage / ("reference" if quant else "bundle"))
    return write_decoder_bundle(src, model, out, stage / "bundle", reference, quant, log)


@dataclass(frozen=True)
class SavedGraph:
    folder: Path
    files: list[str]
    spec: GraphSpec


def save_decoder(src: Source, model, quant: QuantSpec | None, folder: Path) -> SavedGraph:
    if architectures.family(src.config) == architectures.TRACED:
        proto, spec = traced.build_traced(src.module, quant, MODEL_FILE)
    else:
        proto, spec = build_decoder(model, src.weights, src.config, quant)
    return SavedGraph(folder, writer.save_graph(proto, folder, MODEL_FILE), spec)


def write_decoder_bundle(src: Source, model, out: Path, bundle_dir: Path, reference: SavedGraph,
                         quant: QuantSpec | None, log) -> Manifest:
    """The bundle at `out`: with `quant`, built in `bundle_dir` and measured against the
    fp32 `reference` graph (which stays where it is, for the next variant); without, the
    reference itself."""
    bundle = reference
    if quant is not None:
        log(f"building the {quant.scheme} graph ({quant.describe()})")
        bundle = save_decoder(src, model, quant, bundle_dir)
    (bundle.folder / TOKENIZER_FILE).write_text(src.tokenizer_json, encoding="utf-8")
    manifest = Manifest(
        model=model,
        graph=bundle.spec,
        tokenizer=src.tokens,
        quantization=_quantization(quant),
        files={},
        source=src.name,
        exporter_version=__version__,
    )
    log("measuring quality on the held-out text")
    report = _measure(manifest, bundle.folder, reference.folder if quant else None, src.tokenizer_json)
    manifest = dataclasses.replace(manifest, quality=report)
    return writer.finish(bundle.folder, manifest, bundle.files + [TOKENIZER_FILE], out)


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
