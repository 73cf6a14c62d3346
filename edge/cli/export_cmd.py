"""`edge export` (needs the `export` extra) and `edge info`."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.cli.app import app, resolve_bundle
from edge.cli.progress import Progress
from edge.errors import require_extra

QUANTIZE_HELP = "int8 (default), int4, pi4, or none (fp32): a recipe of export/recipes.py."
TARGET_HELP = ("The CPU to run on, which picks the recipe: pi4 (no dot product: int4 layers, integer LM head), "
               "pi5 (int8), native (this CPU's, see `edge doctor`) or portable (pi4's: packed kernels everywhere).")


@app.command()
def export(
    source: str = typer.Argument(..., metavar="SOURCE", help="Hugging Face model id, local model folder, or .gguf file."),
    out: Path = typer.Option(..., "-o", "--out", metavar="BUNDLE", help="Bundle folder to create (must not exist)."),
    quantize: str = typer.Option(None, "--quantize", "-q", metavar="RECIPE", help=QUANTIZE_HELP),
    target: str = typer.Option(None, "--target", metavar="pi4|pi5|native|portable", help=TARGET_HELP),
    max_context: int = typer.Option(None, "--max-context", metavar="N", help="Cap the context window (tokens)."),
    task: str = typer.Option(None, "--task", metavar="TASK", help="text-generation or feature-extraction (detected)."),
):
    """Export a model to a self-contained ONNX bundle and measure its quality against fp32.

    Example: edge export HuggingFaceTB/SmolLM2-135M-Instruct -o smollm2-int8 --target native
    """
    manifest = run_export("edge export", source, out, quantize=quantize, target=target, max_context=max_context,
                          task=task)
    print(f"wrote {out}")
    _print_quality(manifest)


def run_export(command: str, source: str, out: Path, **options):
    """The CLI's one way into the exporter (`edge export`, `edge pull`): only when such a
    command runs, and with a one-line error when the `export` extra is missing."""
    require_extra(command, "export", "torch", "transformers", "onnx", "gguf")
    from export.pipeline import export_model, quiet_libraries

    progress = Progress(command.split()[-1])
    with quiet_libraries():
        return export_model(source, out, log=progress.stage, **options)


@app.command()
def info(
    bundle: str = typer.Argument(None, metavar="BUNDLE", show_default=False,
                                 help="Bundle folder or model name (default: $EDGE_MODEL, else the default model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
):
    """Show a bundle's model, quantization, measured quality and files (checksums verified).

    Example: edge info smollm2-135m-instruct-int8
    """
    from edge.bundle import open_bundle

    bundle = resolve_bundle(bundle)
    manifest = open_bundle(bundle).manifest
    if as_json:
        print(manifest.to_json(), end="")
        return
    m = manifest.model
    pos = m.positional
    rows = [
        ("model", f"{m.architecture} ({m.task}), from {manifest.source or 'unknown'}"),
        ("shape", f"{m.num_layers} layers, {m.num_heads} heads, {m.num_kv_heads} KV heads, "
                  f"head size {m.head_dim}, hidden {m.hidden_size}, vocabulary {m.vocab_size}"),
        ("context", f"{m.context_length} tokens"),
        ("positions", pos.kind + (f" (theta {pos.rope_theta:g}, {pos.rotary_dim} dims)" if pos.kind == "rotary" else "")),
        ("quantization", f"{manifest.quantization.scheme}: {manifest.quantization.method}"),
        ("cpu", _cpu_needs(manifest.quantization)),
        ("graph", f"{manifest.graph.file}, {len(manifest.graph.inputs)} inputs, {len(manifest.graph.outputs)} outputs, "
                  f"built by {manifest.graph.builder}"),
        ("tokenizer", _tokens(manifest)),
        ("files", ", ".join(f"{name} ({_size(bundle / name)})" for name in manifest.files) + "; checksums ok"),
        ("exporter", f"edge {manifest.exporter_version}, schema {manifest.schema_version}"),
    ]
    if manifest.is_decoder:
        s = manifest.sampling
        rows.append(("sampling", s.describe() if s else "greedy (the source recommends none)"))
    if manifest.pooling is not None:
        p = manifest.pooling
        note = "" if p.source == "sentence-transformers" else " (default: no sentence-transformers files)"
        rows.append(("pooling", f"{p.mode}{', L2-normalised' if p.normalize else ''}, max {p.max_length} tokens{note}"))
    for key, value in rows:
        print(f"{key:>13}: {value}")
    _print_quality(manifest)


def _cpu_needs(q) -> str:
    """Example: recipe pi4, target pi4 -> "recipe pi4 for target pi4; needs avx2 on x86_64, asimd on aarch64"."""
    made = f"recipe {q.recipe}" + (f" for target {q.target}" if q.target else "") if q.recipe else "recipe not recorded"
    if q.cpu_features is None:
        return f"{made}; CPU features not recorded (exported before schema 3)"
    needs = ", ".join(f"{' '.join(flags)} on {arch}" for arch, flags in q.cpu_features.items())
    return f"{made}; needs {needs or 'no particular CPU feature'}"


def _tokens(manifest) -> str:
    t = manifest.tokenizer
    template = "chat template" if t.chat_template else "no chat template"
    return f"bos {t.bos_token!r}, eos {t.eos_token!r} {list(t.eos_token_ids)}, add_bos={t.add_bos}, {template}"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _print_quality(manifest) -> None:
    """The measured figures, each only if the bundle recorded it (the manifest checked its range)."""
    q = manifest.quality
    if q is None:
        return
    if q.perplexity is not None:
        delta = 100 * (q.perplexity / q.perplexity_fp32 - 1)
        agreement = "".join(f", {name} agreement {value:.1%}" for name, value in
                            (("top-1", q.top1_agreement), ("greedy", q.greedy_agreement)) if value is not None)
        print(f"{'quality':>13}: perplexity {q.perplexity:.2f} vs fp32 {q.perplexity_fp32:.2f} ({delta:+.1f}%)"
              f"{agreement} ({q.tokens} tokens of {q.text})")
    if q.cosine_mean is not None:
        low = f", min {q.cosine_min:.4f}" if q.cosine_min is not None else ""
        print(f"{'quality':>13}: cosine to fp32 mean {q.cosine_mean:.4f}{low} ({q.tokens} {q.text})")
