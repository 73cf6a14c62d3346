"""Write the inspection graph beside the generation graph, sharing its weight bytes.

In: a bundle folder that already holds the generation graph (`model.onnx` + its data file)
and the inspection graph (same weights, plain attention, attention.{layer} outputs). Out:
`inspect.onnx`, whose large initializers point into `model.onnx.data` wherever the bytes
are identical (all the layer weights), plus `inspect.onnx.data` for the rest (rotary tables
in another layout; in int8 bundles also the token table, 31 MB for SmolLM2, which the
generation graph leaves to the runtime); and `TensorRef`s that let the runtime read the
embedding and position tables with numpy, without parsing ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper

from edge.manifest import GraphSpec, Inspection, TensorRef
from export.writer import DATA_SUFFIX, SIZE_THRESHOLD


@dataclass(frozen=True)
class Stored:
    """Where one initializer of a saved graph keeps its bytes."""

    file: str
    offset: int
    length: int


def save(proto: onnx.ModelProto, spec: GraphSpec, tables: dict[str, tuple[str, str | None]],
         folder: Path, graph_file: str, causal: bool = True) -> tuple[Inspection, list[str]]:
    """Save `proto` as `spec.file` in `folder`, linked to `graph_file`'s data. Returns the
    manifest's `Inspection` and the files written (to checksum)."""
    shared = _stored(folder / graph_file)
    own = spec.file + DATA_SUFFIX
    with open(folder / own, "wb") as out:
        for tensor in proto.graph.initializer:
            if len(tensor.raw_data) >= SIZE_THRESHOLD:
                _externalize(tensor, _same_bytes(folder, shared.get(tensor.name), tensor.raw_data) or
                             _append(out, own, tensor.raw_data))
        written = out.tell()
    files = [spec.file]
    if written:
        files.append(own)
    else:
        (folder / own).unlink()
    onnx.save_model(proto, str(folder / spec.file))
    refs = {t.name: _ref(t) for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    tokens, scales = tables["tokens"]
    positions = tables.get("positions", (None, None))[0]
    inspection = Inspection(embedding=refs[tokens], embedding_scales=refs.get(scales),
                            positions=refs.get(positions), graph=spec, causal=causal)
    return inspection, files


def _stored(graph: Path) -> dict[str, Stored]:
    """name -> where its bytes are, for every external initializer of a saved graph."""
    proto = onnx.load(str(graph), load_external_data=False)
    found = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            found[tensor.name] = Stored(info["location"], int(info.get("offset", 0)), int(info["length"]))
    return found


def _same_bytes(folder: Path, stored: Stored | None, raw: bytes) -> Stored | None:
    if stored is None or stored.length != len(raw):
        return None
    on_disk = np.memmap(folder / stored.file, dtype=np.uint8, mode="r", offset=stored.offset, shape=(stored.length,))
    return stored if np.array_equal(on_disk, np.frombuffer(raw, dtype=np.uint8)) else None


def _append(out, file: str, raw: bytes) -> Stored:
    offset = out.tell()
    out.write(raw)
    return Stored(file, offset, len(raw))


def _externalize(tensor: TensorProto, stored: Stored) -> None:
    external_data_helper.set_external_data(tensor, stored.file, stored.offset, stored.length)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")


def _ref(tensor: TensorProto) -> TensorRef:
    info = {e.key: e.value for e in tensor.external_data}
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).name
    return TensorRef(file=info["location"], offset=int(info["offset"]), shape=tuple(tensor.dims), dtype=dtype)
