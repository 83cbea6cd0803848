"""Many image requests on their way at once: submitted any time, collected as they finish.

A character sheet, its identity-gate retries and a strength sweep are many independent images. An
engine that runs them elsewhere (Replicate) keeps several in flight together; one that runs them on
this machine's GPU takes them in turn, `edit_batch` sheet edits per call. Both look the same to a
service through `open_flight`:

    with open_flight(engine, charges, stop=lambda: reporter.cancel_requested) as flight:
        for key, request in work:
            flight.submit(key, request)
        for done in flight.results():   # in the order they finish; a retry may be submitted here
            ...

`charges` is asked before each request starts (so a spending cap holds however many start at once)
and told after it ends whether it was paid for. A stop ends the flight with `Canceled` once nothing
of it runs any more; a cap that refuses the next request ends it with `SpendingCapReached` after the
requests already running have finished and been handed over.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Union

from PIL import Image

from ..progress import Canceled
from .base import EditRequest, GenerateRequest

ImageRequest = Union[EditRequest, GenerateRequest]
STOPPED = "Canceled by the user."


@dataclass(frozen=True)
class ImageDone:
    """One request's end: its image, or why it alone failed (the others go on)."""

    key: Any  # what the caller submitted it with
    request: ImageRequest
    image: Image.Image | None = None
    error: str | None = None
    seconds: float = 0.0


class Charges(Protocol):
    """What a flight asks before and tells after each paid request (the job's meter)."""

    def reserve(self, request: ImageRequest) -> Any:
        """Hold the price of one request; raise SpendingCapReached when it would pass the cap."""

    def settle(self, hold: Any, paid: bool, seconds: float) -> None:
        """Turn the hold into spending (paid) or give it back."""


class Free:
    """Charges for calls nobody meters (a single request whose caller meters the whole call)."""

    def reserve(self, request: ImageRequest) -> None:
        return None

    def settle(self, hold: Any, paid: bool, seconds: float) -> None:
        return None


class ImageFlight(Protocol):
    parallel: int  # how many requests it keeps running at once

    def submit(self, key: Any, request: ImageRequest) -> None: ...

    def results(self) -> Iterator[ImageDone]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "ImageFlight": ...

    def __exit__(self, *exc) -> None: ...


def at_once(parallel: int, edit_batch: int = 1) -> str:
    """What an engine does at once, for the page: predictions in flight, or edits per GPU call."""
    if parallel > 1:
        return (f"Up to {parallel} predictions run at once, each collected as it finishes "
                "(--replicate-parallel, 1-16).")
    if edit_batch > 1:
        return f"One GPU call at a time; the character sheet sends {edit_batch} edits per call (--batch-edits)."
    return "One image at a time on this machine (--batch-edits sends several sheet edits per call)."


def open_flight(engine, charges: Charges | None = None, stop: Callable[[], bool] = lambda: False) -> ImageFlight:
    """The engine's own flight when it runs requests together (`start_flight`), else one in turn.
    Built around `engine` itself, so a wrapper (ZeroGPU's GPU calls) sees every call."""
    start = getattr(engine, "start_flight", None)
    if start is not None:
        return start(charges or Free(), stop)
    return InTurn(engine, charges or Free(), stop)


class InTurn:
    """Requests one call at a time on this machine: consecutive Kontext edits in groups of the
    engine's `edit_batch` (one pipeline call), text-to-image one by one. A failure ends the flight."""

    parallel = 1

    def __init__(self, engine, charges: Charges, stop: Callable[[], bool]) -> None:
        self.engine, self.charges, self.stop = engine, charges, stop
        self._waiting: deque[tuple[Any, ImageRequest]] = deque()

    def submit(self, key: Any, request: ImageRequest) -> None:
        self._waiting.append((key, request))

    def results(self) -> Iterator[ImageDone]:
        while self._waiting:
            if self.stop():
                raise Canceled(STOPPED)
            group = self._next_group()
            holds = []
            try:
                for _, request in group:
                    holds.append(self.charges.reserve(request))
            except BaseException:
                self._waiting.extendleft(reversed(group))
                for hold in holds:
                    self.charges.settle(hold, False, 0.0)
                raise
            started = time.monotonic()
            try:
                images = self._run([request for _, request in group])
            except BaseException:
                for hold in holds:
                    self.charges.settle(hold, False, 0.0)
                raise
            seconds = (time.monotonic() - started) / len(group)
            for (key, request), hold, image in zip(group, holds, images):
                self.charges.settle(hold, True, seconds)
                yield ImageDone(key, request, image=image, seconds=seconds)

    def _next_group(self) -> list[tuple[Any, ImageRequest]]:
        first = self._waiting.popleft()
        group = [first]
        if isinstance(first[1], EditRequest):
            batch = max(1, int(getattr(self.engine, "edit_batch", 1) or 1))
            while self._waiting and len(group) < batch and isinstance(self._waiting[0][1], EditRequest):
                group.append(self._waiting.popleft())
        return group

    def _run(self, requests: list[ImageRequest]) -> list[Image.Image]:
        if isinstance(requests[0], EditRequest):
            return self.engine.edit_many(requests)
        return [self.engine.generate(requests[0])]

    def close(self) -> None:
        self._waiting.clear()

    def __enter__(self) -> "InTurn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
