"""`edge export`: source -> graph -> quantize -> quality -> writer, in one function.

In: a SOURCE (hub id, folder, .gguf), an output folder, a recipe (export/recipes.py). Out:
a bundle folder the runtime can load, with the quality it measured in its manifest.

source.py loads the model; architectures.py names its family; graph/ builds the fp32 graph
and, quantizing, the graph the recipe's spec for that family describes (quantize.py does
the arithmetic), and the inspection graph (inspection.py); quality.py runs both with the
edge runtime and compares them; writer.py checksums and moves the bundle into place.
Encoders also record how they pool (sentence_transformers.py).
"""

from __future__ import annotations

import contextlib

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.bundle import Bundle
from edge.embeddings.model import EmbeddingModel
from edge.engine.decoder_runner import DecoderRunner
from edge.engine.encoder_runner import EncoderRunner
from edge.manifest import GraphSpec, Manifest, ModelConfig, Quality, Quantization
from edge.tokenizer import load_tokenizer
from export import (__version__, architectures, generation_config, inspection, quality, recipes,
                    sentence_transformers, writer)
from export.architectures import Family
from export.graph import MODEL_FILE, Graph, build_graph, traced
from export.quantize import QuantSpec
from export.recipes import Recipe
from export.source import Source, load_source, shareable_name

TOKENIZER_FILE = "tokenizer.json"


def export_model(
    source: str,
    out: Path,
    quantize: str | Recipe | None = None,
    max_context: int | None = None,
    task: str | None = None,
    log: Callable[[str], None] = lambda message: None,
    target: str | None = None,
) -> Manifest:
    """`quantize`: a recipe's name (`--quantize`: int8, int4, pi4, none; default int8) or a
    `Recipe` of one's own (benchmarks/quantization.py compares variants so); `target`: a CPU
    to export for (`--target`: pi4, pi5, native, portable), which picks the recipe."""
    recipe = recipes.choose(quantize, target)
    if target is not None:
        log(f"target {target}: --quantize {recipe.name}")
    out = Path(out).expanduser()
    with writer.staging(out) as stage:
        log(f"reading {source}")
        src = load_source(source, task)
        family = architectures.family(src.config)
        model = architectures.model_config(src.config, src.task, max_context)
        if family.task == architectures.EMBEDDINGS:
            quant = recipe.encoder
        elif family is architectures.TRACED:
            log(f"{model.architecture} has no native graph builder: tracing the transformers model")
            model = traced.with_cache_shape(model, src.module)
            quant = recipe.traced
        else:
            quant = recipe.decoder
        quantization = _quantization(quant, recipe, target)
        if family.task == architectures.EMBEDDINGS:
            return _export_encoder(src, family, model, quant, stage, out, log, quantization)
        return _export_decoder(src, family, model, quant, stage, out, log, quantization)


def _export_decoder(src: Source, family: Family, model: ModelConfig, quant: QuantSpec | None,
                    stage: Path, out: Path, log, quantization: Quantization) -> Manifest:
    sampling = generation_config.read_sampling(src.name, log)
    log(f"default sampling: {sampling.describe() if sampling else 'greedy (the source recommends none)'}")
    staged = _stage(src, family, model, quant, stage, log, quantization=quantization, sampling=sampling)
    log("measuring quality on the held-out text")
    report = _measure_decoder(staged, src.tokenizer_json, log)
    log(f"writing {out}")
    return _finish(staged, report, out)


def _export_encoder(src: Source, family: Family, model: ModelConfig, quant: QuantSpec | None,
                    stage: Path, out: Path, log, quantization: Quantization) -> Manifest:
    pooling = sentence_transformers.read_pooling(sentence_transformers.folder(src), model)
    log(f"pooling: {pooling.mode}{', normalised' if pooling.normalize else ''}, max {pooling.max_length} tokens "
        f"({pooling.source})")
    staged = _stage(src, family, model, quant, stage, log, pooling=pooling, quantization=quantization)
    log("measuring cosine to fp32 on the shipped sentences")
    report = _measure_encoder(staged)
    log(f"writing {out}")
    return _finish(staged, report, out)


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


def _stage(src: Source, family: Family, model: ModelConfig, quant: QuantSpec | None, stage: Path, log, **fields) -> Staged:
    """The fp32 graph and, with `quant`, the quantized one beside it; the inspection graph,
    which shares the bundle graph's weight bytes (none for traced graphs); the tokenizer.
    `fields`: more Manifest fields (the quantization, an encoder's pooling, a decoder's sampling)."""
    build = _builder(src, family, model)
    log("building the fp32 graph")
    reference = _save(build(None, False), stage / ("reference" if quant else "bundle"))
    bundle = reference
    if quant is not None:
        log(f"building the {quant.scheme} graph ({quant.describe()})")
        bundle = _save(build(quant, False), stage / "bundle")
    inspect, inspect_files = None, []
    if family is not architectures.TRACED:
        log("building the inspection graph (attention weights for `edge inspect`)")
        graph = build(quant, True)
        inspect, inspect_files = inspection.save(graph.proto, graph.spec, graph.tables, bundle.folder, MODEL_FILE,
                                                 causal=model.task == architectures.TEXT)
        del graph
    (bundle.folder / TOKENIZER_FILE).write_text(src.tokenizer_json, encoding="utf-8")
    manifest = Manifest(model=model, graph=bundle.spec, tokenizer=src.tokens, files={}, source=shareable_name(src.name), exporter_version=__version__, inspect=inspect,
                        **fields)
    return Staged(bundle.folder, reference if quant else None, bundle.files + inspect_files + [TOKENIZER_FILE],
                  manifest)


def _builder(src: Source, family: Family, model: ModelConfig) -> Callable[[QuantSpec | None, bool], Graph]:
    """`(quant, inspect) -> Graph`: edge's own graph for the family, or the traced model."""
    if family is architectures.TRACED:
        return lambda quant, inspect: traced.build_traced(src.module, quant, MODEL_FILE)
    return lambda quant, inspect: build_graph(family.build, model, src.weights, src.config, quant, inspect)


def _save(graph: Graph, folder: Path) -> SavedGraph:
    return SavedGraph(folder, writer.save_graph(graph.proto, folder, MODEL_FILE), graph.spec)


def _quantization(quant: QuantSpec | None, recipe: Recipe, target: str | None) -> Quantization:
    """What the manifest records: the graph's spec, the recipe and target it came from, and
    the CPU features its kernels need (none in fp32)."""
    needs = dict(recipe.needs) if quant is not None else {}
    if quant is None:
        return Quantization(scheme="none", method="float32 weights", recipe=recipe.name, target=target or "",
                            cpu_features=needs)
    return Quantization(scheme=quant.scheme, method=quant.describe(), block_size=quant.block_size,
                        recipe=recipe.name, target=target or "", cpu_features=needs)


def _finish(staged: Staged, report: Quality, out: Path) -> Manifest:
    manifest = dataclasses.replace(staged.manifest, quality=report)
    return writer.finish(staged.bundle, manifest, staged.files, out)


def _measure_decoder(staged: Staged, tokenizer_json: str, log) -> Quality:
    from tokenizers import Tokenizer  # exporter side: the oracle tokenizer is fine here

    tokenizer = Tokenizer.from_str(tokenizer_json)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    quantized = DecoderRunner.open(Bundle(staged.bundle, staged.manifest))
    if staged.reference is None:
        return quality.measure(quantized, None, encode, log)
    fp32 = dataclasses.replace(staged.manifest, graph=staged.reference.spec, inspect=None)
    return quality.measure(DecoderRunner.open(Bundle(staged.reference.folder, fp32)), quantized, encode, log)


def _measure_encoder(staged: Staged) -> Quality:
    """Cosine of the bundle's sentence vectors to fp32's (to themselves with --quantize none)."""
    tokenizer = load_tokenizer(staged.bundle / TOKENIZER_FILE)
    models = [EmbeddingModel(staged.manifest, tokenizer, EncoderRunner.open(Bundle(folder, staged.manifest)))
              for folder in (staged.reference.folder if staged.reference else staged.bundle, staged.bundle)]
    return quality.measure_cosine(*models)


@contextlib.contextmanager
def quiet_libraries():
    """transformers' and huggingface_hub's own progress bars and warnings would interleave
    with edge's stage lines: off while exporting, as they were after."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging

    hub_bars, bars, verbosity = hub.are_progress_bars_disabled(), logging.is_progress_bar_enabled(), logging.get_verbosity()
    hub.disable_progress_bars()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
        if not hub_bars:
            hub.enable_progress_bars()
