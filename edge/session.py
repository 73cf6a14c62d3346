"""The onnxruntime session: options, threads, and feeding/reading tensors by name.

In: a graph file and the input/output names the manifest promises. Out: `run(feeds)`
returning outputs by name. A graph whose names differ from the manifest is refused at
load, so the runtime never feeds a tensor to the wrong input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BundleError


def default_threads() -> int:
    """Physical cores are what matter for these kernels; os.cpu_count() counts SMT siblings."""
    count = os.cpu_count() or 1
    return max(1, count // 2) if count >= 8 else count


def spinning_pays() -> bool:
    """Whether idle intra-op workers should spin between ops. On free cores spinning makes
    decode ~20% faster; on cores other processes already saturate, spinning workers steal
    the time the busy one needs and decode ran ~3x slower (benchmarks/README.md). The
    1-minute load average at load time tells which case this is."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return True
    return load < (os.cpu_count() or 1)


class Session:
    def __init__(self, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...], threads: int | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning_pays() else "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"onnxruntime cannot load {path.name}: {first}. Re-export the bundle.") from None
        self.threads = options.intra_op_num_threads
        _check_names("inputs", inputs, [i.name for i in self._session.get_inputs()])
        _check_names("outputs", outputs, [o.name for o in self._session.get_outputs()])
        self.output_names = list(outputs)

    def io_binding(self) -> ort.IOBinding:
        return self._session.io_binding()

    def run_bound(self, io: ort.IOBinding) -> None:
        """Run with inputs and outputs bound to caller-owned buffers (no output copies)."""
        self._session.run_with_iobinding(io)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


def _check_names(kind: str, expected: tuple[str, ...], actual: list[str]) -> None:
    if sorted(expected) != sorted(actual):
        missing = sorted(set(expected) - set(actual))[:3]
        extra = sorted(set(actual) - set(expected))[:3]
        raise BundleError(
            f"the graph's {kind} do not match the manifest (missing {missing}, unexpected {extra}). "
            "The bundle is inconsistent: re-export it."
        )
