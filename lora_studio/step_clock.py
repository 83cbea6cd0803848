"""A model pass's steps in words: "step 12/28 · 3.1 s/step · ~40 s left".

One FLUX.1 image at 1024² is 28 transformer steps of seconds each, so "running · 0%" for a minute
reads as a hang. The clock times the steps the job's reporter hears (progress.model_step) and says
how far the pass under way is and how long it has left. Imports nothing of the app: every layer
may use it.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable

RECENT = 8  # steps the pace is taken over: it follows a change (a bigger batch) within a few steps


class StepClock:
    """Seconds per step, from the steps of the passes heard so far. A pass's first step also holds
    its prompt encoding, so it counts only while no other step is known."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._first: float | None = None  # the first step of the pass under way
        self._last: float | None = None
        self._done = 0

    def tick(self, done: int, total: int) -> str:
        """Step `done` of `total` ended (0: a pass starts); returns the words for it."""
        now = self._clock()
        if done <= 0 or self._last is None or done <= self._done:  # a new pass
            self._first, self._last, self._done = None, now, max(0, done)
            return f"step 0/{total}" if done <= 0 else f"step {done}/{total}"
        seconds = (now - self._last) / (done - self._done)
        if self._done == 0:
            self._first = seconds
        else:
            self._recent.append(seconds)
        self._last, self._done = now, done
        pace = self.seconds_per_step
        if pace is None:
            return f"step {done}/{total}"
        return f"step {done}/{total} · {pace_text(pace)} · ~{left_text((total - done) * pace)} left"

    @property
    def seconds_per_step(self) -> float | None:
        if self._recent:
            return statistics.median(self._recent)
        return self._first


def pace_text(seconds: float) -> str:
    return f"{seconds:.1f} s/step" if seconds >= 0.95 else f"{seconds:.2f} s/step"


def left_text(seconds: float) -> str:
    """A time still to go, as people say it (also a download's)."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
