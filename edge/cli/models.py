"""`edge models` (list, show, rm) and `edge pull`: models by name in the edge cache.

A model's name is its bundle folder's name under `<edge cache>/bundles`; every command's
-m takes it, as does `edge.load(name)`. `edge pull` exports a source into that folder in
one step (a Hugging Face id needs the network; a local GGUF file or folder does not).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer

from edge.cli.app import app
from edge.cli.export_cmd import QUANTIZE_HELP, TARGET_HELP
from edge.errors import BundleError, UsageError
from edge.paths import bundles_dir, is_name

models_app = typer.Typer(help="Models in the edge cache: list (default), show NAME, rm NAME.\n\nExample: edge models",
                         invoke_without_command=True, no_args_is_help=False)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="One JSON object per model.")):
    """List the models in the edge cache: name, kind, quantization, size, quality, path.

    Example: edge models
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = [_describe(folder) for folder in sorted(bundles_dir().glob("*")) if folder.is_dir()]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        print(f"no models in {bundles_dir()}: `edge pull SOURCE` makes one.", file=sys.stderr)
        return
    widths = [max(len(str(r[k])) for r in rows) for k in ("name", "kind", "quantization", "size")]
    for r in rows:
        cells = [str(r[k]).ljust(w) for k, w in zip(("name", "kind", "quantization", "size"), widths)]
        print("  ".join([*cells, r["quality"], r["path"]]))


@models_app.command("show")
def show(name: str = typer.Argument(..., metavar="NAME", help="A model name from `edge models`."),
         as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON.")):
    """What `edge info` shows, for a model by name. Example: edge models show smollm2-135m-instruct-int8"""
    from edge.cli.export_cmd import info

    info(_named(name), as_json)


@models_app.command("rm")
def remove(name: str = typer.Argument(..., metavar="NAME", help="A model name from `edge models`.")):
    """Delete a model from the edge cache. Example: edge models rm smollm2-135m-instruct-int4"""
    folder = _named(name)
    shutil.rmtree(folder)
    print(f"removed {name} ({folder})", file=sys.stderr)


@app.command()
def pull(
    source: str = typer.Argument(..., metavar="SOURCE", help="Hugging Face model id, local model folder, or .gguf file."),
    quantize: str = typer.Option(None, "--quantize", "-q", metavar="RECIPE", help=QUANTIZE_HELP),
    target: str = typer.Option(None, "--target", metavar="pi4|pi5|native|portable", help=TARGET_HELP),
    name: str = typer.Option(None, "--name", metavar="NAME",
                             help="The model's name (default: from the source and target or quantization)."),
):
    """Export SOURCE into the edge cache under a name, ready for -m NAME.

    Example: edge pull ./SmolLM2-135M-Instruct-Q4_1.gguf --target pi4 --name smollm2
    """
    from edge.cli.export_cmd import run_export

    name = name or default_name(source, target or quantize or "int8")
    if not is_name(name):
        raise UsageError(f"--name must be a plain folder name (no '/', not hidden), got {name!r}.")
    out = bundles_dir() / name
    if out.exists():
        raise BundleError(f"a model named {name} exists already ({out}). Remove it with `edge models rm {name}`, "
                          "or pass --name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_export("edge pull", source, out, quantize=quantize, target=target)
    print(name)


def default_name(source: str, quantize: str) -> str:
    """`quantize`: a recipe or a target. Example: "HuggingFaceTB/SmolLM2-135M-Instruct", "int8" ->
    "smollm2-135m-instruct-int8"."""
    stem = Path(source.rstrip("/")).name
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    return f"{stem.lower()}-{'fp32' if quantize == 'none' else quantize}"


def _named(name: str) -> Path:
    folder = bundles_dir() / name
    if not is_name(name) or not folder.is_dir():
        raise BundleError(f"no model named {name} in {bundles_dir()}. `edge models` lists them.")
    return folder


def _describe(folder: Path) -> dict:
    """One row of `edge models`; a folder that is not a readable bundle says why."""
    from edge.manifest import Manifest

    size = f"{sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 1e6:.0f} MB"
    row = {"name": folder.name, "kind": "?", "quantization": "?", "size": size, "quality": "", "path": str(folder)}
    try:
        manifest = Manifest.read(folder)
    except BundleError as exc:
        return {**row, "quality": f"(not a bundle: {exc})"}
    q = manifest.quality
    if q is not None and q.perplexity and q.perplexity_fp32:
        quality = f"perplexity {100 * (q.perplexity / q.perplexity_fp32 - 1):+.1f}% vs fp32"
    elif q is not None and q.cosine_mean is not None:
        quality = f"cosine {q.cosine_mean:.4f} to fp32"
    else:
        quality = "(not measured)"
    return {**row, "kind": manifest.model.task, "quantization": manifest.quantization.scheme, "quality": quality}
