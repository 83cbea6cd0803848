"""The one interface long-running work reports through.

Engines and the trainer take a `Reporter`; the job queue supplies one that persists to the store,
tests and the CLI can pass `NullReporter`. Keeping it here (standard library only) lets engines stay
ignorant of jobs, tabs and storage.

Model steps reach the job without a reporter in every engine call: an engine's calls keep the one
signature all engines share (Replicate's, ZeroGPU's pickled ones), so the job queue's worker says
who hears the steps of the job it runs (`hearing_steps`) and the local engine tells each denoising
step to whoever that is (`model_step`). The listener may raise `Canceled` there: a stop lands at the
next step, not after the image.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Protocol


class Canceled(Exception):
    """Raised inside work when the user asked to stop it."""


class SpendingCapReached(Canceled):
    """Raised before a paid call that would take a job past its spending cap; the job stops as
    canceled (what it made is kept) with this message. `billed_s`: seconds a remote run stopped
    part-way was billed for, when known."""

    def __init__(self, message: str = "", billed_s: float | None = None) -> None:
        super().__init__(message)
        self.billed_s = billed_s


class StepListener(Protocol):
    def step(self, done: int, total: int, images: int = 1) -> None:
        """Step `done` of `total` of a model pass drawing `images` at once has ended (0: a pass is about
        to start); raises Canceled when the work should stop here."""


_heard = threading.local()  # the listener of the job this thread runs


@contextmanager
def hearing_steps(listener: StepListener | None) -> Iterator[None]:
    """Within this block, model steps taken on this thread are told to `listener` (None: to nobody)."""
    before = getattr(_heard, "listener", None)
    _heard.listener = listener
    try:
        yield
    finally:
        _heard.listener = before


def model_step(done: int, total: int, images: int = 1) -> None:
    """Tell the job this thread runs (if any) that a model step ended; may raise Canceled."""
    listener = getattr(_heard, "listener", None)
    if listener is not None:
        listener.step(done, total, images)


class Reporter(Protocol):
    def log(self, message: str) -> None: ...

    def progress(self, fraction: float, message: str = "") -> None: ...

    def metric(self, name: str, value: float, step: int | None = None) -> None: ...

    def output(self, key: str, value: Any) -> None: ...

    @property
    def cancel_requested(self) -> bool: ...

    def check_cancel(self) -> None: ...


class NullReporter:
    """Reporter that keeps everything in memory; for tests, the CLI and the Python API."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.logs: list[str] = []
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.outputs: dict[str, Any] = {}
        self.last_progress = 0.0
        self.cancel = False

    def log(self, message: str) -> None:
        self.logs.append(message)
        if self.echo:
            print(message, flush=True)

    def progress(self, fraction: float, message: str = "") -> None:
        self.last_progress = fraction

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.metrics.setdefault(name, []).append((step, float(value)))

    def output(self, key: str, value: Any) -> None:
        self.outputs[key] = value

    @property
    def cancel_requested(self) -> bool:
        return self.cancel

    def check_cancel(self) -> None:
        if self.cancel:
            raise Canceled("Canceled by the user.")
