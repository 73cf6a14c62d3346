"""Index on a Ray cluster: Ray Data reads and chunks the files, then embeds the new chunks over
an actor pool, one edge embedding model per actor. Only this module imports Ray, and index.py
imports it only for `build_index(..., ray=...)` (`edge index --ray`).

In: the candidate paths (walked by the driver: names only) and the previous index's files.
Out: plan.Planned per text file in path order, then the new chunks' vectors one group at a
time in group order. Two stages:
  1. read + chunk: tasks of one CPU run corpus.read_text_file and plan.chunk_file on
     FILES_PER_BATCH files at a time (the tokenizer loaded once per worker process); a file
     whose sha256 the previous index has is not chunked;
  2. embed: plan.groups -> `map_batches` over `workers` actors of `worker_cpus` CPUs, each
     loading the bundle with that many onnxruntime threads; one group a batch, so every vector
     is the one the local path computes (plan.py says why that matters).
The driver writes the shards and commits (index.py); workers never write into the index
folder, so a run killed anywhere leaves the previous index as it was. A worker that dies is
restarted and its batch retried (max_restarts, max_task_retries). The bundle must be at the
same path on every node (a shared folder); each actor checks the model's identity.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge.embeddings.corpus import Skipped, read_text_file
from edge.embeddings.plan import Planned, chunk_file, embed_group
from edge.embeddings.shards import Entry
from edge.errors import InputError, SearchIndexError, require_extra

FILES_PER_BATCH = 16
RETRIES = 3  # restarts of a dead actor, and retries of its batch
CRASH_ONCE = "EDGE_RAY_TEST_CRASH_ONCE"  # tests: a file whose removal makes one actor exit mid-batch


class RayJob:
    """One indexing run's connection to Ray; a context manager that shuts down a cluster it started."""

    def __init__(self, address: bool | str, model, chunking: dict, workers: int | None, worker_cpus: int):
        require_extra("edge index --ray", "scale", "ray", "pyarrow", "pandas")
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            local = address is True and not os.environ.get("RAY_ADDRESS")
            ray.init(address=None if address is True else address, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False,
                     **({"_system_config": {"worker_register_timeout_seconds": 300}} if local else {}))
        try:
            self._configure(model, chunking, workers, worker_cpus)
        except BaseException:
            self.__exit__()
            raise

    def _configure(self, model, chunking: dict, workers: int | None, worker_cpus: int) -> None:
        import ray

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if isinstance(worker_cpus, bool) or not isinstance(worker_cpus, int) or not 1 <= worker_cpus <= cpus:
            raise InputError(f"{{param}} must be between 1 and the cluster's {cpus} CPUs, got {worker_cpus!r}.",
                             param="worker_cpus")
        self.workers = workers or max(1, cpus // worker_cpus)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers * worker_cpus > cpus:
            raise InputError(f"{{param}} x worker_cpus must fit the cluster's {cpus} CPUs, got {workers!r} x "
                             f"{worker_cpus}.", param="workers")
        self.cpus, self.worker_cpus = cpus, worker_cpus
        self.bundle, self.identity, self.dim = str(model.path.resolve()), model.identity, model.dim
        self.chunking = chunking

    def __enter__(self) -> RayJob:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def plan(self, paths: list[Path], previous: dict, skipped: Skipped) -> list[Planned]:
        """Stage 1: read, hash and chunk the files on the cluster; their plan in path order."""
        if not paths:
            return []
        import ray

        known = {path: entry["sha256"] for path, entry in previous.items()}
        dataset = ray.data.from_items([{"i": i, "path": str(p)} for i, p in enumerate(paths)]).map_batches(
            _chunk_files, fn_args=(self.bundle, self.identity, self.chunking, known), batch_size=FILES_PER_BATCH,
            num_cpus=1, ray_remote_args_fn=lambda: {"max_retries": RETRIES})
        plan = []
        for row in sorted(_failing_as_one_line(dataset.take_all), key=lambda r: r["i"]):
            path = str(paths[row["i"]])
            if row["skip"]:
                getattr(skipped, row["skip"]).append(Path(path))
            elif path in previous and previous[path]["sha256"] == row["sha256"]:
                plan.append(Planned(path, row["sha256"], None, tuple(previous[path]["rows"])))
            else:
                entries = [Entry(path, *fields) for fields in json.loads(row["entries"])]
                plan.append(Planned(path, row["sha256"], entries))
        return plan

    def embed(self, groups: list[list[str]]) -> Iterator[np.ndarray]:
        """Stage 2: each group's (n, dim) float32 unit rows, in group order, as they come."""
        if not groups:
            return iter(())
        import ray

        dataset = ray.data.from_items([{"g": g, "texts": json.dumps(texts)} for g, texts in enumerate(groups)])
        dataset = dataset.map_batches(
            _Embedder, fn_constructor_args=(self.bundle, self.identity, self.worker_cpus), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.worker_cpus,
            ray_remote_args_fn=lambda: {"max_restarts": RETRIES, "max_task_retries": RETRIES})
        return self._in_order(dataset, len(groups))

    def _in_order(self, dataset, count: int) -> Iterator[np.ndarray]:
        waiting, want = {}, 0
        for batch in _failing_as_one_line(lambda: iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))):
            for g, vectors in zip(batch["g"], batch["vectors"]):
                waiting[int(g)] = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
            while want in waiting:
                yield waiting.pop(want)
                want += 1
        if want != count:
            raise SearchIndexError(f"Ray returned {want} of {count} groups of vectors. Run `edge index` again.")


def _failing_as_one_line(run):
    """run() (or every item it yields), with a failure on the cluster as one SearchIndexError
    line: Ray wraps a worker's exception (RayTaskError, Ray Data's UserCodeException), so the
    edge error inside is found and raised as it was; anything else is named by its last line."""
    try:
        result = run()
        return result if isinstance(result, list) else _guarded(result)
    except Exception as exc:
        raise _one_line(exc) from None


def _guarded(items):
    try:
        yield from items
    except Exception as exc:
        raise _one_line(exc) from None


def _one_line(exc: BaseException) -> Exception:
    from edge import errors
    from edge.errors import EdgeError

    seen, chain = set(), [exc]
    while chain[-1] is not None and id(chain[-1]) not in seen:
        seen.add(id(chain[-1]))
        chain.append(getattr(chain[-1], "cause", None) or chain[-1].__cause__)
    inner = next((e for e in reversed(chain) if isinstance(e, EdgeError)), None)  # the deepest: the original
    if inner is not None:
        return inner
    for text in map(str, chain[:-1]):  # Ray Data may pass on only the worker's traceback, as text
        found = re.search(r"^edge\.errors\.(\w+): (.+)$", text, re.MULTILINE)
        kind = getattr(errors, found[1], None) if found else None
        if isinstance(kind, type) and issubclass(kind, EdgeError):
            return kind(found[2].strip())
    lines = [line for line in str(chain[-2]).strip().splitlines() if line.strip()] or [type(chain[-2]).__name__]
    return SearchIndexError(f"indexing on Ray failed ({lines[-1].strip()[:300]}); the previous index is unchanged. "
                            "Fix the cause (Ray's logs say more) and run `edge index` again.")


@functools.lru_cache(maxsize=2)
def _open_model(bundle: str, identity: str, threads: int):
    """The bundle loaded once per worker process (stage 1 tasks reuse it), checked to be the driver's model."""
    import edge

    model = edge.load(bundle, threads=threads)
    if model.identity != identity:
        raise SearchIndexError(f"the bundle at {bundle} on this Ray node is another model than the driver's. "
                               "Put the same bundle at the same path on every node.")
    return model


def _chunk_files(batch: dict, bundle: str, identity: str, chunking: dict, known: dict) -> dict:
    """Stage 1: files in ({"i", "path"}), one row per file out ({"i", "sha256", "skip", "entries"})."""
    model = _open_model(bundle, identity, 1)
    out = {"i": [], "sha256": [], "skip": [], "entries": []}
    for i, path in zip(batch["i"], batch["path"]):
        skipped = Skipped()
        file = read_text_file(Path(str(path)), skipped)
        skip = next((kind for kind in ("binary", "non_utf8", "unreadable") if getattr(skipped, kind)), "")
        entries = ""
        if file is not None and known.get(str(path)) != file.sha256:
            chunks = chunk_file(str(path), file.text, lambda t: len(model.tokenizer.encode(t)), chunking)
            entries = json.dumps([[e.start_line, e.end_line, e.text, e.heading] for e in chunks], ensure_ascii=False)
        for key, value in (("i", int(i)), ("sha256", file.sha256 if file else ""), ("skip", skip),
                           ("entries", entries)):
            out[key].append(value)
    return {"i": np.array(out["i"], dtype=np.int64),
            **{key: np.array(out[key], dtype=object) for key in ("sha256", "skip", "entries")}}


class _Embedder:
    """Stage 2 actor: one group of texts in ({"g", "texts"}), its vectors out ({"g", "vectors"})."""

    def __init__(self, bundle: str, identity: str, threads: int):
        self.model = _open_model(bundle, identity, threads)

    def __call__(self, batch: dict) -> dict:
        _crash_once_for_tests()
        vectors = [embed_group(self.model, json.loads(texts)) for texts in batch["texts"]]  # each (n, dim)
        column = np.empty(len(vectors), dtype=object)
        column[:] = vectors
        return {"g": np.asarray(batch["g"], dtype=np.int64), "vectors": column}


def _crash_once_for_tests() -> None:
    """Exit this worker process at once if the tests' marker file exists (and take it away, so
    the retried batch runs): a worker killed mid-run, as a lost node would be."""
    marker = os.environ.get(CRASH_ONCE)
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return
        os._exit(1)
