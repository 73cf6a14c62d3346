"""The onnxruntime session: options, threads, and feeding/reading tensors by name.

In: a graph file and the input/output names the manifest promises. Out: `run(feeds)`
returning outputs by name. A graph whose names differ from the manifest is refused at
load, so the runtime never feeds a tensor to the wrong input.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BundleError, InputError, UsageError

# onnxruntime's log severity for edge's sessions: 3 (errors) unless $EDGE_ORT_LOG_LEVEL says
# otherwise; 0 (verbose) or 1 (info) shows which kernels a graph got, e.g. MatMulNBits'
# "Falling back to using unpacked compute mode" on a CPU without its packed kernel
# (scripts/check-aarch64.sh greps for it)
ORT_LOG_LEVEL = "EDGE_ORT_LOG_LEVEL"


def default_threads() -> int:
    """Physical cores are what matter for these kernels; os.cpu_count() counts SMT siblings."""
    count = os.cpu_count() or 1
    return max(1, count // 2) if count >= 8 else count


RUN_QUEUE_SAMPLES = 5  # 1 ms apart: ~6 ms of a ~0.4 s load


def spinning_pays(threads: int) -> bool:
    """Whether `threads` intra-op workers should spin between ops: only when they all have a
    core nobody else wants. On free cores spinning makes decode ~25% faster (154 vs 123
    tok/s, SmolLM2 int8, 2 threads on 2 cores); with one busy process beside them it made
    decode 1.6x slower (71 vs 114 tok/s), with many ~3x (benchmarks/README.md). The demand
    is read from the run queue, sampled a few times; the 1-minute load average, used before,
    lags (in a benchmark it still counted the runtime that had just exited)."""
    try:
        samples = []
        for _ in range(RUN_QUEUE_SAMPLES):
            samples.append(others_runnable(_read_loadavg(), _own_thread_states()))
            time.sleep(0.001)
        others = statistics.median(samples)
    except (OSError, ValueError, IndexError):  # no readable /proc (not Linux, or a sandbox)
        try:  # the older, lagging rule: a load average below the core count
            return os.getloadavg()[0] < _usable_cores()
        except (AttributeError, OSError):
            return True
    return others + threads <= _usable_cores()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def others_runnable(loadavg: str, own_states: list[str]) -> int:
    """Threads of other processes running or waiting for a core, from /proc/loadavg (whose
    count includes this process's running threads) and this process's thread states.

    Example: "0.50 0.40 0.30 3/250 1234", ["R", "S", "R"] -> 1
    """
    runnable = int(loadavg.split()[3].split("/")[0])
    return max(0, runnable - own_states.count("R"))


def _read_loadavg() -> str:
    return Path("/proc/loadavg").read_text()


def _own_thread_states() -> list[str]:
    """One state letter per thread of this process ("R" running, "S" sleeping, ...)."""
    states = []
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        states.append(stat[stat.rindex(")") + 2])  # the field after "(command name)"
    return states


MADV_DONTNEED = 4  # Linux: drop the range's pages from this process; a later read faults them back in


def release_repacked_pages(folder: Path) -> None:
    """Take the bundle file pages onnxruntime no longer reads out of the resident set.

    onnxruntime memory-maps the bundle's weights; MatMulNBits repacks them into its own
    buffers at load, yet the maps of their scales and zero points stay, with every page
    read while repacking resident: 21 MB of SmolLM2 int8's peak RSS, never read again.
    MADV_DONTNEED on a file mapping none of whose pages was written (no anonymous
    copy-on-write page, resident or swapped out) only unmaps them: a later read maps the
    same bytes back from the file (as it does for norm weights), so no value can change.
    Only the folder's weight files (*.data) are touched.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        smaps = Path("/proc/self/smaps").read_text()
    except OSError:
        return
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in clean_weight_maps(smaps, folder.resolve()):
        madvise(start, end - start, MADV_DONTNEED)


def clean_weight_maps(smaps: str, folder: Path) -> list[tuple[int, int]]:
    """(start, end) of the maps in `smaps` (/proc/self/smaps text) of `folder`'s *.data
    files that hold no written page (Anonymous and Swap both 0 kB)."""
    maps: list[tuple[tuple[int, int], dict[str, str]]] = []
    for line in smaps.splitlines():
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and len(fields) >= 5:  # a map's header: range, perms, offset, dev, inode[, path]
            path = Path(fields[5]) if len(fields) == 6 else None
            ours = path is not None and path.parent == folder and path.suffix == ".data"
            span = tuple(int(x, 16) for x in fields[0].split("-")) if ours else None
            maps.append((span, {}))
        elif maps and maps[-1][0] and len(fields) >= 2:
            maps[-1][1][fields[0]] = fields[1]
    return [span for span, counts in maps
            if span and counts.get("Anonymous:") == "0" and counts.get("Swap:") == "0"]


def ort_log_level() -> int:
    """$EDGE_ORT_LOG_LEVEL (0 verbose .. 4 fatal), default 3; below 3 onnxruntime's default
    logger is lowered too, or it would filter the session's messages out."""
    raw = os.environ.get(ORT_LOG_LEVEL, "3")
    if raw not in ("0", "1", "2", "3", "4"):
        raise UsageError(f"${ORT_LOG_LEVEL} must be 0 (verbose) to 4 (fatal), got {raw!r}.")
    if int(raw) < 3:
        ort.set_default_logger_severity(int(raw))
    return int(raw)


class Session:
    def __init__(self, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...], threads: int | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = ort_log_level()
        spinning = spinning_pays(options.intra_op_num_threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"onnxruntime cannot load {path.name}: {first}. Re-export the bundle.") from None
        release_repacked_pages(path.parent)
        self.threads = options.intra_op_num_threads
        _check_names("inputs", inputs, [i.name for i in self._session.get_inputs()])
        _check_names("outputs", outputs, [o.name for o in self._session.get_outputs()])
        self.output_names = list(outputs)
        self.shapes = {v.name: v.shape for v in [*self._session.get_inputs(), *self._session.get_outputs()]}

    def check_dims(self, name: str, expected: dict[int, tuple[str, int]]) -> None:
        """BundleError if tensor `name` declares a fixed size other than the manifest's on an
        axis: `expected` maps axis -> (manifest field, size). Symbolic axes are not checked.
        Checked at load, so a manifest that disagrees with its graph never reaches `run`
        (where onnxruntime would fail with a RuntimeError deep in a kernel)."""
        shape = self.shapes.get(name) or []
        for axis, (field, size) in expected.items():
            declared = shape[axis] if -len(shape) <= axis < len(shape) else None
            if isinstance(declared, int) and declared != size:
                raise BundleError(f"manifest.json field {field} is {size} but the graph's {name} has {declared} "
                                  "there. The bundle is inconsistent: re-export it.")

    def io_binding(self) -> ort.IOBinding:
        return self._open().io_binding()

    def run_bound(self, io: ort.IOBinding) -> None:
        """Run with inputs and outputs bound to caller-owned buffers (no output copies)."""
        self._open().run_with_iobinding(io)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._open().run(self.output_names, feeds)
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        """Release onnxruntime's session (its weights) now; later runs raise an InputError."""
        self._session = None

    def _open(self) -> ort.InferenceSession:
        if self._session is None:
            raise InputError("this model was closed. Load it again with edge.load(...).")
        return self._session


def _check_names(kind: str, expected: tuple[str, ...], actual: list[str]) -> None:
    if sorted(expected) != sorted(actual):
        missing = sorted(set(expected) - set(actual))[:3]
        extra = sorted(set(actual) - set(expected))[:3]
        raise BundleError(
            f"the graph's {kind} do not match the manifest (missing {missing}, unexpected {extra}). "
            "The bundle is inconsistent: re-export it."
        )
