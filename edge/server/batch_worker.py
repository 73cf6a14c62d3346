"""One thread per generation model that decodes its requests together (`edge serve --parallel N`).

Jobs come in through the same bounded queue as `Worker`'s (`submit` refuses a full one at
once with `QueueFull`); a job's `work(model)` returns the prompt ids and the generation
options. The thread moves a job from the queue into the model's `Scheduler` as soon as a
slot is free for it, and steps the scheduler while anything runs: each step gives every
running request its next token (see generation/scheduler.py). Chunks go to the job's sink
as they are sampled, then `END`; an error goes to the sink instead. A job whose client left
(its cancel flag) leaves its slot at the next step.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from edge.server.worker import END, Job, ShuttingDown, Worker


class BatchWorker:
    def __init__(self, model: Any, max_queue: int, name: str, slots: int, kv_tokens: int):
        self.model = model
        self.scheduler = model.scheduler(slots, kv_tokens)
        self.slots = slots
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._running: set[Job] = set()  # jobs handed to the scheduler and not ended
        self._closing = False
        self._submitting = threading.Lock()  # submit and close: a job is queued before close drains, or answered 503
        self.served = 0  # jobs that ran to their end (or to an error)
        self.cancelled = 0  # jobs stopped because their client went away
        self._thread = threading.Thread(target=self._run, name=f"edge-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._jobs.qsize() + len(self.scheduler.waiting)

    @property
    def slots_busy(self) -> int:
        return self.scheduler.busy

    @property
    def busy(self) -> bool:
        return bool(self._running)

    submit = Worker.submit  # the same queue, lock and closing flag

    def close(self) -> None:
        """Stop the running jobs at the next step, fail the queued ones, end the thread."""
        with self._submitting:
            self._closing = True
        for job in list(self._running):
            job.cancel()
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
        while True:
            scheduler = self.scheduler  # a failed step replaces it: read it afresh every turn
            idle = not scheduler.running and not scheduler.waiting
            while scheduler.free > len(scheduler.waiting):  # a job waits in the bounded queue until a slot is free
                try:
                    job = self._jobs.get(block=idle)
                except queue.Empty:
                    break
                if job is None:
                    self._stop_all()
                    return
                self._start(job)
                idle = False
            if scheduler.running or scheduler.waiting:
                self._step()

    def _start(self, job: Job) -> None:
        if job.cancelled:
            self._cancelled(job)
            return
        try:
            ids, options = job.work(self.model)
            request = self.model.request(ids, lambda chunk: self._emit(job, chunk), **options,
                                         cancelled=lambda: self._is_cancelled(job))
            self.scheduler.add(request)
        except Exception as exc:  # the handler turns it into an error response; the worker goes on
            self.served += 1
            job.sink(exc)
            return
        self._running.add(job)

    def _step(self) -> None:
        try:
            self.scheduler.step()
        except Exception as exc:  # a failed step fails the requests in it, not the server
            for job in list(self._running):
                self._running.discard(job)
                self.served += 1
                job.sink(exc)
            self.scheduler = self.model.scheduler(self.slots, self.scheduler.runner.capacity * self.slots)

    def _emit(self, job: Job, chunk) -> None:
        job.sink(chunk)
        if chunk.finish_reason is not None:
            self._running.discard(job)
            self.served += 1
            job.sink(END)

    def _is_cancelled(self, job: Job) -> bool:
        """Polled by the scheduler every step; True once, when it then frees the slot."""
        if job.cancelled:
            self._cancelled(job)
            return True
        return False

    def _cancelled(self, job: Job) -> None:
        self._running.discard(job)
        if self._closing:
            job.sink(ShuttingDown())
        else:
            self.cancelled += 1

    def _stop_all(self) -> None:
        for job in list(self._running):
            self._running.discard(job)
            job.sink(ShuttingDown())
