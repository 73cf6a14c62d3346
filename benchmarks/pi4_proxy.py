"""A Raspberry Pi 4's cost without a Pi 4: instructions per decode step on qemu's emulated
Cortex-A72, MatMulNBits' unpacked-compute fallback lines, and weight bytes per token.

An emulated proxy, not a Pi speed: qemu counts the guest (aarch64) instructions the runtime
executes, which follows the kernels onnxruntime picks for the core (packed or not, integer
or float), not memory bandwidth, caches or clocks.

Host side (root, Debian): for each NAME=BUNDLE, copies the bundle and this file into an
arm64 root with the runtime in /opt/edge (scripts/check-aarch64.sh's, or any such root) and
runs it there twice under Debian's dynamic qemu-aarch64 (the static one cannot load TCG
plugins), with the core's /proc/cpuinfo bind-mounted (tests/data/cpuinfo):
- counting: the `stepcount` plugin (benchmarks/README.md: how to build it) counts guest
  instructions; the guest brackets STEPS decode steps with syscall 4095 markers, one
  intra-op thread (the plugin's counter is shared by threads, and idle workers would spin);
- logging: onnxruntime at verbose ($EDGE_ORT_LOG_LEVEL=0), prefill and 3 decode steps;
  the lines "Falling back to using unpacked compute mode" are counted.
Weight bytes per token: the bytes of model.onnx's initializers a decode step reads whole
(all but tables only looked up by Gather), read on the host with onnx.

    sudo .venv/bin/python benchmarks/pi4_proxy.py --rootfs ~/.cache/edge/aarch64-rootfs/root \\
        fp32=DIR int8=DIR int4=DIR pi4=DIR
Guest side (runtime only): python pi4_proxy.py guest BUNDLE STEPS
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = Path("/work/.qemu-plugins/libstepcount.so")
QEMU = Path("/usr/bin/qemu-aarch64")  # Debian's qemu-user: dynamic, with the plugin API
CPUINFO = {"cortex-a72": "rpi4-cortex-a72", "cortex-a76": "rpi5-cortex-a76"}
FALLBACK = "Falling back to using unpacked compute mode"
MARKER = 4095  # a syscall number Linux does not have: qemu returns ENOSYS, the plugin logs a count
# SmolLM2's chat prompt "Explain why the sky is blue." as ids: fixed, so no tokenizer runs
PROMPT = [1, 9690, 314, 260, 2329, 282, 2593, 30, 378, 2177, 316, 5248, 28, 2]
WARMUP = 2


# --- guest: inside the arm64 root, the runtime only -------------------------------------
def guest(bundle: str, steps: int) -> dict:
    """Prefill, WARMUP decode steps, then `steps` steps between the markers 1 and 2."""
    import numpy as np

    from edge.bundle import open_bundle
    from edge.engine.decoder_runner import DecoderRunner

    libc = ctypes.CDLL(None)
    decoder = DecoderRunner.open(open_bundle(bundle, verify=False), threads=1)
    decoder.reserve(len(PROMPT) + WARMUP + steps + 1)
    tokens = [int(np.argmax(decoder.prefill(PROMPT)))]
    for _ in range(WARMUP):
        tokens.append(int(np.argmax(decoder.decode_step(tokens[-1]))))
    libc.syscall(MARKER, 1)
    started = time.perf_counter()
    for _ in range(steps):
        tokens.append(int(np.argmax(decoder.decode_step(tokens[-1]))))
    elapsed = time.perf_counter() - started
    libc.syscall(MARKER, 2)
    return {"tokens": tokens, "emulated_ms_per_step": 1e3 * elapsed / steps}


# --- host: the arm64 root, qemu with the plugin, the two runs ---------------------------
def install_qemu(root: Path, plugin: Path) -> None:
    """The host's qemu-aarch64, the plugin and their x86 libraries in ROOT/qemu-host, so qemu
    runs inside the chroot and the guest sees the arm64 root as its /."""
    host = root / "qemu-host"
    (host / "lib").mkdir(parents=True, exist_ok=True)
    shutil.copy(QEMU, host / "qemu-aarch64")
    shutil.copy(plugin, host / "libstepcount.so")
    for binary in (QEMU, plugin):
        for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
            found = re.search(r"(/\S+)", line.split("=>")[-1])
            if found:
                shutil.copy(Path(found.group(1)).resolve(), host / "lib" / Path(found.group(1)).name)


@contextlib.contextmanager
def mounted(root: Path, core: str):
    """proc, sys, dev and the core's cpuinfo in the root; unmounts what it mounted."""
    done = []
    for target, args in (("proc", ["-t", "proc", "proc"]), ("sys", ["-t", "sysfs", "sysfs"]), ("dev", ["--bind", "/dev"])):
        if subprocess.run(["mountpoint", "-q", str(root / target)]).returncode:
            subprocess.run(["mount", *args, str(root / target)], check=True)
            done.append(root / target)
    info = REPO / "tests" / "data" / "cpuinfo" / f"{CPUINFO[core]}.txt"
    subprocess.run(["mount", "--bind", str(info), str(root / "proc" / "cpuinfo")], check=True)
    done.append(root / "proc" / "cpuinfo")
    try:
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["umount", "-l", str(path)], check=False)


def in_root(root: Path, core: str, args: list[str], plugin: bool, env: dict[str, str]) -> str:
    """Run /opt/edge/bin/python ARGS in the root on the emulated `core`; stdout + stderr."""
    qemu = ["/qemu-host/lib/ld-linux-x86-64.so.2", "--library-path", "/qemu-host/lib", "/qemu-host/qemu-aarch64",
            "-cpu", core]
    if plugin:
        qemu += ["-plugin", "/qemu-host/libstepcount.so", "-d", "plugin"]
    clean = ["/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8", "PATH=/opt/edge/bin:/usr/bin:/bin",
             *(f"{key}={value}" for key, value in env.items())]
    run = subprocess.run(["chroot", str(root), *clean, *qemu, "/opt/edge/bin/python", *args],
                         capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"the guest failed ({run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return run.stdout + run.stderr


def measure(root: Path, core: str, name: str, bundle: Path, steps: int) -> dict:
    shutil.rmtree(root / "proxy-bundle", ignore_errors=True)
    shutil.copytree(bundle, root / "proxy-bundle")
    shutil.copy(__file__, root / "proxy.py")
    script = ["/proxy.py", "guest", "/proxy-bundle"]
    counted = in_root(root, core, [*script, str(steps)], plugin=True, env={})
    marks = dict(re.findall(r"stepcount marker (\d+) (\d+)", counted))
    result = json.loads(next(line for line in counted.splitlines() if line.startswith("{")))
    logged = in_root(root, core, [*script, "1"], plugin=False, env={"EDGE_ORT_LOG_LEVEL": "0"})
    return {"name": name, "core": core, "instructions_per_step": (int(marks["2"]) - int(marks["1"])) / steps,
            "fallback_lines": logged.count(FALLBACK), "weight_mb_per_token": weight_bytes(bundle) / 1e6,
            "tokens": result["tokens"], "emulated_ms_per_step": result["emulated_ms_per_step"]}


def weight_bytes(bundle: Path) -> int:
    """Bytes of model.onnx's initializers a decode step reads whole: all but those that only
    Gather looks up (a float token table; an int8 one is not in model.onnx at all)."""
    import onnx

    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, set()).add("lookup" if node.op_type == "Gather" and position == 0 else "read")
    total = 0
    for tensor in graph.initializer:
        if consumers.get(tensor.name) == {"lookup"}:
            continue
        external = {entry.key: entry.value for entry in tensor.external_data}
        total += int(external["length"]) if "length" in external else len(tensor.raw_data)
    return total


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["name"] == "int8"), rows[0])
    lines = ["| bundle | instructions / decode step | vs int8 | unpacked-compute lines | weight MB / token |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['instructions_per_step'] / 1e6:,.1f} M | "
                     f"{r['instructions_per_step'] / base['instructions_per_step']:.3f} | {r['fallback_lines']} | "
                     f"{r['weight_mb_per_token']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "guest":
        print(json.dumps(guest(argv[1], int(argv[2]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", help="NAME=BUNDLE_DIR, e.g. pi4=/tmp/pi4-bundle")
    parser.add_argument("--rootfs", type=Path, required=True, help="arm64 root with the runtime in /opt/edge")
    parser.add_argument("--cpu", default="cortex-a72", choices=sorted(CPUINFO))
    parser.add_argument("--steps", type=int, default=4, help="decode steps counted (default 4)")
    parser.add_argument("--plugin", type=Path, default=PLUGIN)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("pi4_proxy.py needs root (chroot, mount)")
    install_qemu(args.rootfs, args.plugin)
    rows = []
    with mounted(args.rootfs, args.cpu):
        for spec in args.bundles:
            name, _, folder = spec.partition("=")
            rows.append(measure(args.rootfs, args.cpu, name, Path(folder).expanduser(), args.steps))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"emulated {args.cpu} (qemu TCG, {args.steps} decode steps, 1 thread): a proxy, not a Pi speed")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
