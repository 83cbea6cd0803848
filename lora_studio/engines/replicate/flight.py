"""Up to N Replicate predictions in flight together, handed over in the order they finish.

Predictions are independent and each spends most of its life waiting on Replicate's GPUs, so a
sheet of 30 takes about as long as 30 / N of them. Each request runs in one of N worker threads (the
client is thread-safe); everything the caller sees — charges settled, results, errors — happens on
the caller's thread. A prediction that fails or times out is tried once more with the same input
(the same seed), then reported for that image alone. A stop, or an error that every prediction
would meet (a refused token), cancels every prediction still running before the flight ends.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from PIL import Image

from ...progress import Canceled, SpendingCapReached
from ..flight import STOPPED, Charges, ImageDone, ImageRequest
from .predictions import PredictionFailed, Stopped

LOOK_S = 0.05  # how often the caller's thread looks at the stop button while it waits


@dataclass
class _Outcome:
    key: Any
    request: ImageRequest
    hold: Any
    image: Image.Image | None = None
    error: str | None = None
    stopped: bool = False
    fatal: BaseException | None = None
    seconds: float = 0.0


class PredictionFlight:
    """`run(request, stop)` makes one image (raising PredictionFailed / Stopped / EngineError);
    this keeps up to `parallel` of them running and collects them."""

    def __init__(self, run: Callable[[ImageRequest, threading.Event], Image.Image], charges: Charges,
                 stop: Callable[[], bool], parallel: int) -> None:
        self.parallel = max(1, int(parallel))
        self._run, self._charges, self._stop_asked = run, charges, stop
        self._stop = threading.Event()  # set: start nothing more, cancel what runs
        self._waiting: deque[tuple[Any, ImageRequest]] = deque()
        self._landed: queue.Queue[_Outcome] = queue.Queue()
        self._running = 0
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="replicate-flight")
        self._refusal: SpendingCapReached | None = None
        self._fatal: BaseException | None = None

    def submit(self, key: Any, request: ImageRequest) -> None:
        self._waiting.append((key, request))

    def results(self) -> Iterator[ImageDone]:
        while True:
            if self._stop_asked():
                self._stop.set()
            self._launch()
            if not self._running:
                break
            try:
                outcome = self._landed.get(timeout=LOOK_S)
            except queue.Empty:
                continue
            done = self._land(outcome)
            if self._stop_asked():
                self._stop.set()
            self._launch()  # the freed place first: the caller may take a while over this image
            if done is not None:
                yield done
        if self._fatal is not None:
            raise self._fatal
        if self._stop.is_set():
            raise Canceled(STOPPED)
        if self._refusal is not None:
            raise self._refusal

    def close(self) -> None:
        """Cancel whatever still runs and wait until it has (a caller that stopped reading early)."""
        if self._running:
            self._stop.set()
        while self._running:
            self._land(self._landed.get())
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "PredictionFlight":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the caller's thread ---------------------------------------------------------------
    def _launch(self) -> None:
        """Start waiting requests while there is room, each only once the charges hold its price."""
        while self._waiting and self._running < self.parallel and not self._stop.is_set() and not self._refusal:
            key, request = self._waiting[0]
            try:
                hold = self._charges.reserve(request)
            except SpendingCapReached as refusal:
                self._refusal = refusal  # what runs finishes and is handed over; nothing more starts
                return
            self._waiting.popleft()
            self._running += 1
            self._pool.submit(self._work, key, request, hold)

    def _land(self, outcome: _Outcome) -> ImageDone | None:
        self._running -= 1
        self._charges.settle(outcome.hold, outcome.image is not None, outcome.seconds)
        if outcome.fatal is not None:
            self._fatal = self._fatal or outcome.fatal
            self._stop.set()
            return None
        if outcome.stopped:
            return None
        return ImageDone(outcome.key, outcome.request, outcome.image, outcome.error, outcome.seconds)

    # ---- a worker thread -------------------------------------------------------------------
    def _work(self, key: Any, request: ImageRequest, hold: Any) -> None:
        outcome = _Outcome(key, request, hold)
        started = time.monotonic()
        try:
            outcome.image = self._twice(request)
        except Stopped:
            outcome.stopped = True
        except PredictionFailed as failed:
            outcome.error = str(failed)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            outcome.fatal = exc
        outcome.seconds = time.monotonic() - started
        self._landed.put(outcome)

    def _twice(self, request: ImageRequest) -> Image.Image:
        try:
            return self._run(request, self._stop)
        except PredictionFailed:
            if self._stop.is_set():
                raise Stopped() from None
        try:
            return self._run(request, self._stop)
        except PredictionFailed as again:
            raise PredictionFailed(f"{again} (tried twice with the same seed)") from None
