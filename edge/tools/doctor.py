"""Is this CPU good at int8? `/proc/cpuinfo` text in; features, the int8 kernel onnxruntime
will pick, the bundle to export for it, a recommendation and a load-time warning out.

What decides int8 speed is whether onnxruntime's MatMulNBits has an int8 kernel for the
CPU (accuracy_level 4 quantizes activations to int8 per block): on x86 it needs AVX2
(faster with VNNI or AVX-512), on Arm the dot-product instructions (`asimddp`, faster
with `i8mm`). Without them it falls back to dequantizing the weights to float, so an int8
bundle may not beat fp32: a Raspberry Pi 4 (Cortex-A72) has no `asimddp`, a Pi 5
(Cortex-A76) has. Separately, per-channel QInt8 weights run through U8S8 kernels that can
saturate on x86 without VNNI (vpmaddubsw adds pairs in 16 bits); edge's blockwise
MatMulNBits does not use them. The verdicts are pure functions of the CPU (edge/cpu.py parses it).

Bundles of schema 3 record the CPU features their kernels need (export/recipes.py `needs`);
a CPU without them gets a warning naming `edge export --target` for it. The pi4 recipe
(4-bit layers, MatMulInteger head) needs no dot product: the bundle for a Pi 4.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from edge.cpu import INT8_FEATURES, Cpu, Int8Support, host_cpu, int8_support, parse_cpuinfo, process_arch
from edge.manifest import Manifest

# The CPU facts (Cpu, parse_cpuinfo, int8_support, host_cpu, ...) live in edge/cpu.py and are
# imported here under their own names, for `edge doctor` and its tests.

# Quantized ops whose int8 activations are unsigned and weights signed (U8S8) on x86.
U8S8_OPS = ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "per-channel QInt8")


# `edge export --target` names, by the CPU they are for (the recipes: export/recipes.py TARGETS)
TARGET_USE = {
    "pi4": "Arm without dot product (Raspberry Pi 4, Cortex-A72)",
    "pi5": "Arm with dot product (Raspberry Pi 5, Cortex-A76)",
    "native": "this CPU",
    "portable": "any CPU",
}


class QuantizationWarning(UserWarning):
    """The bundle's quantization is known to be slow or unsafe on this CPU (it still runs)."""


def recommendation(arch: str, support: Int8Support | None) -> str:
    """What to run on a CPU of `arch` with this int8 support, in a sentence or three."""
    if support is None:
        return ("Unknown CPU: edge cannot tell whether int8 is fast here. Compare an int8 and an fp32 bundle "
                "with `edge bench`.")
    if support.kernel is None:
        if arch == "aarch64":
            return ("No dot-product instructions (asimddp), as on a Raspberry Pi 4: onnxruntime has no int8 "
                    "kernel for MatMulNBits here and dequantizes an int8 bundle's weights to float on every call. "
                    "Export with `--target pi4`: 4-bit layers and an int8 MatMulInteger LM head, whose kernels "
                    "run packed without dot product.")
        return ("No AVX2: onnxruntime has no int8 kernel for MatMulNBits here and falls back to "
                "dequantizing the weights to float, so an int8 bundle may not be faster than fp32 (it still "
                "needs a quarter of the memory for its weights). Compare both with `edge bench`.")
    advice = f"int8 bundles run on onnxruntime's {support.kernel} int8 kernel: use them."
    if support.u8s8_saturates:
        advice += (" No VNNI: per-channel QInt8 weights from other tools (U8S8 kernels) can saturate here; "
                   "edge's blockwise MatMulNBits with int8 activations does not have that problem.")
    return advice


def fitting_recipe(cpu: Cpu | None) -> str:
    """The `--quantize` recipe whose kernels run packed on `cpu`: int8 where onnxruntime has an
    int8 kernel; pi4 on Arm without dot product, and when the CPU is unknown (it runs packed
    everywhere); fp32 on x86 without AVX2 (no quantized kernel packs there)."""
    support = None if cpu is None else int8_support(cpu)
    if support is None:
        return "pi4"
    if support.kernel is not None:
        return "int8"
    return "pi4" if cpu.arch == "aarch64" else "none"


def fitting_target(cpu: Cpu | None) -> str:
    """The `--target` to export for `cpu`: pi4 / pi5 by Arm dot product, native on x86 (the
    recipe fitting_recipe picks), portable when the CPU is unknown."""
    if cpu is None or cpu.arch == "unknown":
        return "portable"
    if cpu.arch == "aarch64":
        return "pi5" if "asimddp" in cpu.features else "pi4"
    return "native"


def export_command(manifest: Manifest, cpu: Cpu | None) -> str:
    """The command that exports this bundle's model for `cpu`. Example: SmolLM2-135M-Instruct.Q4_1.gguf
    on a Pi 4 -> "edge export SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2-135m-instruct.q4_1-pi4 --target pi4"."""
    source = manifest.source or "SOURCE"
    target = fitting_target(cpu)
    stem = Path(source).name.lower().removesuffix(".gguf")
    return f"edge export {source} -o {stem}-{target} --target {target}"


def missing_features(manifest: Manifest, cpu: Cpu) -> list[str]:
    """The recorded CPU features this bundle's kernels need that `cpu` lacks ([] when none are recorded)."""
    needs = (manifest.quantization.cpu_features or {}).get(cpu.arch, ())
    return [name for name in needs if name not in cpu.features]


def quantization_warning(manifest: Manifest, cpu: Cpu | None) -> str | None:
    """Why this bundle's quantization is slow or unsafe on `cpu`, or None (also for an unknown CPU)."""
    support = None if cpu is None else int8_support(cpu)
    q = manifest.quantization
    if support is None or q.scheme == "none":
        return None
    # schema 3: the bundle says what it needs (its MatMulInteger, if any, is U8U8: no saturation)
    if q.cpu_features is not None:
        missing = missing_features(manifest, cpu)
        if not missing:
            return None
        return (f"this {q.recipe or q.scheme} bundle's kernels need {', '.join(missing)}, which {cpu.model} lacks: "
                "onnxruntime runs a slow fallback here (8-bit weights are turned back into floats on every call). "
                f"Export a bundle for this CPU: `{export_command(manifest, cpu)}` (see `edge doctor`).")
    if support.u8s8_saturates and any(op in q.method for op in U8S8_OPS):
        return (f"this bundle's weights are quantized for U8S8 kernels ({q.method}), which can saturate on "
                f"{cpu.model} (no VNNI) and give wrong outputs. Re-export it with `edge export` (blockwise "
                "MatMulNBits is not affected).")
    if support.kernel is None and "MatMulNBits" in q.method:
        return (f"{cpu.model} has no int8 kernel for MatMulNBits, so this {q.scheme} bundle runs on a slower "
                f"fallback and may not beat fp32 here. Export a bundle for this CPU: "
                f"`{export_command(manifest, cpu)}` (see `edge doctor`).")
    return None


_WARNED: set[str] = set()  # messages already given in this process


def warn_if_unsuited(manifest: Manifest) -> None:
    """A `QuantizationWarning` when the bundle's quantization is slow or unsafe on this CPU,
    once per process for each message (a server loading the same bundle again says it once)."""
    message = quantization_warning(manifest, host_cpu())
    if message and message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, QuantizationWarning, stacklevel=3)


def report() -> dict:
    """Everything `edge doctor` shows, as plain data."""
    import onnxruntime

    from edge.engine.session import default_threads

    cpu = host_cpu()
    support = None if cpu is None else int8_support(cpu)
    arch = process_arch()
    target = fitting_target(cpu)
    return {
        "architecture": arch,
        "cpu": cpu.model if cpu else "unknown (/proc/cpuinfo missing or of another architecture: emulated?)",
        "cores": cpu.cores if cpu else os.cpu_count(),
        "features": {name: name in cpu.features for name in INT8_FEATURES.get(arch, ())} if cpu else {},
        "int8_kernel": support.kernel if support else None,
        "u8s8_saturates": support.u8s8_saturates if support else None,
        "onnxruntime": onnxruntime.__version__,
        "threads": default_threads(),
        "recommendation": recommendation(arch, support),
        "target": target,  # `edge export --target` for this CPU
        "recipe": fitting_recipe(cpu),  # the recipe (`--quantize`) that target exports here
    }
