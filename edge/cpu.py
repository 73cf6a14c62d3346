"""What this machine's CPU can do: `/proc/cpuinfo` text in, its architecture, model,
features and the int8 kernel onnxruntime's MatMulNBits will pick out.

The lowest layer of facts about the host: `edge doctor` (tools/doctor.py) turns them into
advice and load-time warnings, and generation (drafts.py) into how much a decoder call with
several new tokens costs. Parsing is a pure function of the text; `host_cpu` reads it once.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

# The instruction-set features that decide int8 speed, in the order `edge doctor` shows them.
INT8_FEATURES = {
    "x86_64": ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"),
    "aarch64": ("asimd", "asimddp", "i8mm"),
}
# Arm's "CPU part" numbers (implementer 0x41) of the cores a Raspberry Pi or an Arm server has.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}
MACHINE_NAMES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


@dataclass(frozen=True)
class Cpu:
    arch: str  # "x86_64", "aarch64", or "unknown": read from the text, not from this process
    model: str  # "AMD EPYC", "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)", ...
    cores: int  # logical processors listed
    features: frozenset[str]


@dataclass(frozen=True)
class Int8Support:
    kernel: str | None  # the int8 MatMulNBits kernel family onnxruntime picks; None: no int8 kernel
    u8s8_saturates: bool  # per-channel QInt8 (U8S8) weights can overflow 16-bit sums here


def parse_cpuinfo(text: str) -> Cpu:
    """Example: "processor : 0\\nFeatures : fp asimd\\nCPU part : 0xd08" -> Cpu("aarch64", "Cortex-A72", 1, {fp, asimd})."""
    fields: dict[str, str] = {}
    cores = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        cores += key == "processor"
        fields.setdefault(key, value)  # every core repeats the same lines: keep the first
    if "flags" in fields:
        return Cpu("x86_64", fields.get("model name", "x86_64"), cores, frozenset(fields["flags"].split()))
    features = frozenset(fields.get("Features", "").split())
    if "asimd" in features:
        return Cpu("aarch64", _arm_model(fields), cores, features)
    return Cpu("unknown", fields.get("model name", fields.get("Model", "unknown")), cores, features)


def _arm_model(fields: dict[str, str]) -> str:
    """The board (Raspberry Pis say which) and the core, as far as cpuinfo tells."""
    core = ARM_PARTS.get(fields.get("CPU part", "")) if fields.get("CPU implementer") == "0x41" else None
    board = fields.get("Model")
    if board and core:
        return f"{board} ({core})"
    return board or core or f"Arm part {fields.get('CPU part', 'unknown')}"


def int8_support(cpu: Cpu) -> Int8Support | None:
    """Which int8 kernel onnxruntime's MatMulNBits dispatches to (as MLAS picks it); None for
    an unknown architecture."""
    has = cpu.features.__contains__
    if cpu.arch == "x86_64":
        vnni = has("avx512_vnni") or has("avx_vnni")
        if not has("avx2"):
            return Int8Support(None, not vnni)
        if all(map(has, ("avx512f", "avx512bw", "avx512dq", "avx512vl"))):  # MLAS's "AVX-512 core"
            return Int8Support("AVX-512 VNNI" if has("avx512_vnni") else "AVX-512", not vnni)
        return Int8Support("AVX-VNNI" if has("avx_vnni") else "AVX2", not vnni)
    if cpu.arch == "aarch64":
        kernel = "NEON i8mm" if has("i8mm") else "NEON dot product" if has("asimddp") else None
        return Int8Support(kernel, False)
    return None


@functools.cache
def host_cpu() -> Cpu | None:
    """This machine's CPU, or None when /proc/cpuinfo is missing or describes another
    architecture than this process runs (user-mode emulation shows the host's)."""
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return cpu if cpu.arch == process_arch() else None


def process_arch() -> str:
    machine = platform.machine()
    return MACHINE_NAMES.get(machine.lower(), machine)
