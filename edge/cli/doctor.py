"""`edge doctor`: this machine's CPU features that decide int8 speed, and which bundle to run on it."""

from __future__ import annotations

import json

import typer

from edge.cli.app import app


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print a JSON object.")):
    """Show the architecture, cores, int8 instruction sets, onnxruntime and threads, the bundle to export,
    and a recommendation.

    Example: edge doctor
    """
    from edge.tools.doctor import TARGET_USE, report

    facts = report()
    if as_json:
        print(json.dumps(facts))
        return
    features = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in facts["features"].items())
    rows = [
        ("architecture", f"{facts['architecture']}, {facts['cpu']}, {facts['cores']} cores"),
        ("int8 features", features or "unknown"),
        ("int8 kernel", facts["int8_kernel"] or "none (MatMulNBits falls back to float)"),
        ("onnxruntime", facts["onnxruntime"]),
        ("threads", f"{facts['threads']} (onnxruntime intra-op threads edge uses by default)"),
        ("bundle", f"edge export SOURCE -o DIR --target {facts['target']} "
                   f"(for {TARGET_USE[facts['target']]}: --quantize {facts['recipe']} here)"),
        ("recommendation", facts["recommendation"]),
    ]
    for key, value in rows:
        print(f"{key:>14}: {value}")
