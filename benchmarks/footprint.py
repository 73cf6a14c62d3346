"""Footprint benchmark (not a test): what the runtime costs on a small machine.

Four figures against the README's targets ("Raspberry Pi"): the installed size of the
runtime and its dependencies, `python -c "import edge"` time, peak RSS while generating 32
greedy tokens with the int8 SmolLM2 bundle (read from disk, not from the page cache: see
`evict`), and load to first token. Everything runs in a
fresh venv made with `pip install REPO` (the runtime alone: no exporter dependencies, no torch), each
measurement in its own child process; times are medians over --runs. The machine's load
average and the CPU seconds are printed beside them: on a busy machine the wall times are
upper bounds, and CPU time (all threads) shows the work itself.

    python benchmarks/footprint.py                   # builds the venv in a temp folder
    python benchmarks/footprint.py --venv DIR --bundle DIR --runs 5 --json out.json
    python benchmarks/footprint.py --installed-only  # MB of the running Python's edge-runtime

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Explain in two sentences why the sky is blue."
TARGETS = {"site_packages_mb": 150, "import_s": 0.5, "peak_rss_mb": 300, "load_to_first_token_s": 1.5}  # at most
UNITS = {"site_packages_mb": "MB", "import_s": "s", "peak_rss_mb": "MB", "load_to_first_token_s": "s"}

# Runs in the runtime venv: load, first token, 31 more greedy tokens; prints the figures.
GENERATE = """
import json, sys, time
import edge
from edge.tools.bench import peak_rss_mb
started, cpu = time.perf_counter(), time.process_time()
chunks = edge.load(sys.argv[1]).stream(sys.argv[2], max_tokens=32, temperature=0)
next(chunks)
first, first_cpu = time.perf_counter(), time.process_time()
for _ in chunks:
    pass
print(json.dumps({"load_to_first_token_s": first - started, "load_to_first_token_cpu_s": first_cpu - cpu,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def make_venv(venv: Path) -> Path:
    """A venv with `pip install REPO` alone; returns its python. Reused when it already exists."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO)], check=True)
    return python


def installed_by_distribution() -> dict[str, tuple[float, list[str]]]:
    """MB on disk of each distribution installed for this Python (from its RECORD), and the
    names of the distributions it requires."""
    from importlib import metadata

    def name(text: str) -> str:
        return re.split(r"[ ;<>=!~\[(]", text)[0].lower().replace("_", "-")

    out = {}
    for dist in metadata.distributions():
        files = [f.locate() for f in dist.files or ()]
        mb = sum(Path(p).stat().st_blocks * 512 for p in files if Path(p).is_file()) / 1e6
        requires = [name(r) for r in dist.requires or () if "extra ==" not in r]
        out[name(dist.metadata["Name"])] = (mb, requires)
    return out


def closure_mb(dists: dict[str, tuple[float, list[str]]], root: str) -> dict[str, float]:
    """MB of `root` and of everything it requires, all the way down, by distribution.
    Example: {a: (1, [b]), b: (2, [c]), c: (4, []), d: (8, [])}, "a" -> {a: 1, b: 2, c: 4}."""
    sizes, stack = {}, [root]
    while stack:
        name = stack.pop()
        if name in sizes or name not in dists:
            continue
        sizes[name] = dists[name][0]
        stack.extend(dists[name][1])
    return sizes


def site_packages_mb(python: Path) -> float:
    """`du` of the venv's whole site-packages: the runtime, its dependencies, the venv's own pip."""
    path = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0]) / 1e3


def installed(python: Path) -> dict[str, float]:
    """MB by distribution of edge-runtime's closure in the venv of `python`."""
    out = subprocess.run([str(python), __file__, "--installed-only", "--json-out"], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def import_s(python: Path) -> dict[str, float]:
    """Wall and CPU time of a whole `python -c "import edge"`, interpreter start-up included."""
    started = time.perf_counter()
    out = subprocess.run([str(python), "-c", "import edge, time; print(time.process_time())"], capture_output=True,
                         text=True, check=True, cwd=tempfile.gettempdir())
    return {"import_s": time.perf_counter() - started, "import_cpu_s": float(out.stdout)}


def evict(bundle: Path) -> None:
    """Drop the bundle's files from the page cache, so every run reads them from disk, as
    after a reboot or a copy to another machine. (It once mattered for RSS too: a bundle
    `edge export` has just written sits there in large folios on recent kernels, and each
    embedding row read through onnxruntime's map mapped a whole folio. Rows are now read
    with pread and the maps released: the peak is the same either way.)"""
    for path in bundle.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def generate_run(python: Path, bundle: Path) -> dict:
    evict(bundle)
    result = subprocess.run([str(python), "-c", GENERATE, str(bundle), PROMPT], capture_output=True, text=True,
                            cwd=tempfile.gettempdir())  # outside the repository: only the installed edge
    if result.returncode:
        sys.exit(f"the generation child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def default_bundle() -> Path:
    out = subprocess.run([sys.executable, "-m", "export.default"], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return Path(out.stdout.strip().splitlines()[-1])


def report(figures: dict, by_distribution: dict[str, float]) -> bool:
    """Print the figures against their targets; True when every target is met."""
    ok = True
    for key, target in TARGETS.items():
        met = figures[key] <= target
        ok &= met
        print(f"{key:>22}: {figures[key]:8.2f} {UNITS[key]:<2} (target <= {target}) {'ok' if met else 'MISSED'}")
    print(f"{'CPU time':>22}: import {figures['import_cpu_s']:.2f} s, "
          f"load to first token {figures['load_to_first_token_cpu_s']:.2f} s (all threads)")
    print(f"{'edge-runtime closure':>22}: {figures['installed_mb']:8.2f} MB (site-packages less pip, setuptools)")
    print("{:>22}: {}".format("by distribution", ", ".join(
        f"{name} {mb:.1f}" for name, mb in sorted(by_distribution.items(), key=lambda kv: -kv[1]))))
    print(f"{'load average (1 min)':>22}: {figures['load_average']:8.2f} on {os.cpu_count()} cores")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="Runtime-only venv to use or create (default: a temp one).")
    parser.add_argument("--bundle", type=Path, help="int8 bundle (default: the default SmolLM2 bundle).")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--installed-only", action="store_true", help="Print edge-runtime's installed MB and stop.")
    parser.add_argument("--json-out", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.installed_only:
        sizes = closure_mb(installed_by_distribution(), "edge-runtime")
        print(json.dumps(sizes) if args.json_out else f"{sum(sizes.values()):.1f} MB with its dependencies")
        return 0
    bundle = args.bundle or default_bundle()
    with tempfile.TemporaryDirectory() as tmp:
        python = make_venv(args.venv or Path(tmp) / "venv")
        by_distribution = installed(python)
        figures = {"site_packages_mb": site_packages_mb(python), "installed_mb": sum(by_distribution.values())}
        runs = [import_s(python) | generate_run(python, bundle) for _ in range(args.runs)]
    for key in ("import_s", "import_cpu_s", "load_to_first_token_s", "load_to_first_token_cpu_s"):
        figures[key] = statistics.median(run[key] for run in runs)
    figures["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    figures["load_average"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps({**figures, "installed_mb_by_distribution": by_distribution}, indent=2))
    return 0 if report(figures, by_distribution) else 1


if __name__ == "__main__":
    sys.exit(main())
