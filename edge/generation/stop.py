"""Stop rules on streamed text: held-back text in, text safe to emit out.

A stop string may arrive split across tokens ("</" then "s>"), so text that could begin
one is held back until it either completes the stop (generation ends, the stop string is
not emitted) or cannot any more (it is released).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.errors import InputError


class StopStrings:
    """Holds back text that could begin a stop string; releases the rest.

    Example: stop ["</s>"]; push("ab<") -> ("ab", False); push("/s>x") -> ("", True)
    """

    def __init__(self, stops: Sequence[str]):
        if any(not isinstance(s, str) or not s for s in stops):
            raise InputError(f"stop strings must be non-empty strings, got {list(stops)!r}.")
        self._stops = tuple(stops)
        self._held = ""  # never longer than the longest stop string

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string appeared); after a hit, emit and end."""
        pending = self._held + text
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return pending[: min(hits)], True
        keep = self._longest_partial(pending)
        self._held = pending[len(pending) - keep:]
        return pending[: len(pending) - keep], False

    def flush(self, text: str = "") -> str:
        """The held-back text at the end of generation (cut at a stop string if one completes)."""
        released, hit = self.push(text)
        held, self._held = ("" if hit else self._held), ""
        return released + held

    def _longest_partial(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
