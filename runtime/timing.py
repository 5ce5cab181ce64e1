"""Seconds per stage, summed over a run and across threads (``--timings``, summaries, benchmarks).

One timer serves coal-prepare (the stack builder's stages: read_s2, warp_s1, speckle, glcm, ...)
and coal-run (open, read, infer, write, cog, ...), where a reader and a writer thread add to
it beside the main thread.

Example:
    >>> t = StageTimer()
    >>> with t.stage("read"):
    ...     pass
    >>> sorted(t.as_dict())
    ['read']
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class StageTimer:
    """Thread-safe accumulated wall time per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def lap(self, stage: str, since: float) -> float:
        """Add the time from ``since`` (a ``time.perf_counter()`` value) to now to ``stage``;
        return now, the start of the next lap."""
        now = time.perf_counter()
        self.add(stage, now - since)
        return now

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """Time the body of a ``with`` block as ``stage`` (also when it raises)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.lap(stage, t)

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` whose every call is timed as ``stage``."""

        def timed(*a: Any, **k: Any) -> Any:
            with self.stage(stage):
                return fn(*a, **k)

        return timed

    def get(self, stage: str) -> float:
        """Seconds summed so far for ``stage`` (0 when it never ran)."""
        with self._lock:
            return self.seconds.get(stage, 0.0)

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        """The stages and their seconds, rounded."""
        with self._lock:
            return {k: round(v, digits) for k, v in self.seconds.items()}
