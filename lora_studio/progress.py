"""The one interface long-running work reports through.

Engines and the trainer take a `Reporter`; the job queue supplies one that persists to the store,
tests and the CLI can pass `NullReporter`. Keeping it here (no imports) lets engines stay ignorant
of jobs, tabs and storage.
"""
from __future__ import annotations

from typing import Any, Protocol


class Canceled(Exception):
    """Raised inside work when the user asked to stop it."""


class SpendingCapReached(Canceled):
    """Raised before a paid call that would take a job past its spending cap; the job stops as
    canceled (what it made is kept) with this message. `billed_s`: seconds a remote run stopped
    part-way was billed for, when known."""

    def __init__(self, message: str = "", billed_s: float | None = None) -> None:
        super().__init__(message)
        self.billed_s = billed_s


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
