"""One worker thread per model: jobs in through a bounded queue, results out to a sink.

The runtime is single-stream (one decoder, one preallocated KV cache, not thread-safe), so
each loaded model gets exactly one thread that runs its jobs one after another. A job is a
function of the model returning an iterator (generation chunks, or one array of
embeddings); the worker pushes every item to the job's sink, then `END`, or the exception
that stopped it. Between items it checks the job's cancel flag, so a client that went away
stops its generation after at most one more token. `submit` never blocks: a full queue is
refused at once with `QueueFull`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

END = object()  # the last item every job's sink receives, unless an exception is pushed


class QueueFull(Exception):
    """The model's queue holds --max-queue jobs already."""


class ShuttingDown(Exception):
    """The server stopped while the job waited or ran: the handler answers 503."""


class Job:
    """`work(model)` -> an iterator of items; `sink(item)` receives them (from the worker thread)."""

    def __init__(self, work: Callable[[Any], Iterator], sink: Callable[[object], None]):
        self.work = work
        self.sink = sink
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class Worker:
    def __init__(self, model: Any, max_queue: int, name: str):
        self.model = model
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.busy = False
        self._current: Job | None = None  # the running job, cancelled by `close`
        self._closing = False
        self._submitting = threading.Lock()  # submit and close: a job is queued before close drains, or answered 503
        self.served = 0  # jobs that ran to their end (or to an error)
        self.cancelled = 0  # jobs stopped because their client went away
        self._thread = threading.Thread(target=self._run, name=f"edge-worker-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def submit(self, job: Job) -> None:
        with self._submitting:  # after close has drained the queue, nothing may join it unanswered
            if self._closing:
                job.sink(ShuttingDown())
                return
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                raise QueueFull from None

    def close(self) -> None:
        """Stop the running job at its next item, fail the queued ones, end the thread."""
        with self._submitting:
            self._closing = True
        if (current := self._current) is not None:
            current.cancel()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.sink(ShuttingDown())
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self.busy, self._current = True, job
            try:
                self._do(job)
            finally:
                self.busy, self._current = False, None

    def _do(self, job: Job) -> None:
        if job.cancelled:  # the client left while the job was waiting
            self._stopped(job)
            return
        items = None
        try:
            items = job.work(self.model)
            for item in items:
                if job.cancelled:
                    self._stopped(job)
                    return
                job.sink(item)
            self.served += 1
            job.sink(END)
        except Exception as exc:  # the handler turns it into an error response; the worker goes on
            self.served += 1
            job.sink(exc)
        finally:
            if items is not None and hasattr(items, "close"):
                items.close()  # a generator stopped early releases its state now

    def _stopped(self, job: Job) -> None:
        """A cancelled job: its client left, or the server is closing (then it is told so)."""
        if self._closing:
            job.sink(ShuttingDown())
        else:
            self.cancelled += 1
