"""Progress of a long job on stderr: a bar with an ETA on a terminal, plain lines in a pipe.

    with Progress("index") as progress:
        progress.stage("reading files")          # one line, on a terminal and in a pipe
        for done in ...:
            progress.update(done, total)         # terminal: the bar, redrawn; pipe: a line per quarter

On a terminal the bar is redrawn in place (at most every 0.1 s, and at the end); in a pipe
or a log file, where a redrawn bar would be noise, each stage is one line and the count is
one line at each quarter done. `Progress` is also a `progress(done, total)` callback, the
shape `build_index` and `LanguageModel.perplexity` take.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.1
MILESTONES = (25, 50, 75, 100)  # percent done at which a pipe gets a line


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, tty: bool | None = None, clock=time.monotonic,
                 width: int = 30):
        self.label, self.width, self.clock = label, width, clock
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = self.stage_started = clock()
        self._drawn = 0.0  # when the bar was last drawn (0: not on screen)
        self._begun, self._milestone = None, 0  # (time, done) when counting began; last milestone printed

    def stage(self, message: str) -> None:
        """A new stage: one line. On a terminal it says how long the job has run."""
        self._clear()
        elapsed = f" [{_clock(self.clock() - self.started)}]" if self.tty else ""
        self._write(f"{self.label}: {message}{elapsed}\n")
        self.stage_started, self._begun, self._milestone = self.clock(), None, 0

    def update(self, done: int, total: int) -> None:
        """`done` of `total` items of the current stage."""
        now = self.clock()
        if self._begun is None:
            self._begun = (now, done)
        if not self.tty:
            reached = [m for m in MILESTONES if total and 100 * done >= m * total and m > self._milestone]
            if reached:
                self._milestone = reached[-1]
                self._write(f"{self.label}: {done}/{total} ({self._milestone}%)\n")
            return
        if now - self._drawn >= REDRAW_S or done >= total:
            self._write("\r" + self.bar(done, total, now) + "\x1b[K")
            self._drawn = now

    __call__ = update

    def bar(self, done: int, total: int, now: float) -> str:
        """Example: "index [#########.....................] 30/100  30%  ETA 0:07" """
        share = done / total if total else 1.0
        filled = int(self.width * share)
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {share:4.0%}  "
                f"{self._eta(done, total, now)}")

    def _eta(self, done: int, total: int, now: float) -> str:
        if done >= total:
            return f"done in {_clock(now - self.stage_started)}"
        began, first = self._begun or (now, done)
        if done <= first or now <= began:
            return "ETA --:--"
        rate = (done - first) / (now - began)  # items per second since counting began
        return f"ETA {_clock((total - done) / rate)}"

    def close(self) -> None:
        """End the bar's line, so what follows starts on a fresh one."""
        if self._drawn:
            self._write("\n")
            self._drawn = 0.0

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = 0.0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock(seconds: float) -> str:
    """Example: 75.2 -> "1:15"; 3725 -> "1:02:05" """
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
