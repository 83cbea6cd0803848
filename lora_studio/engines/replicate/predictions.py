"""One Replicate prediction from creation to its output URL, as many of them run side by side.

Created in sync mode (`Prefer: wait=n`): Replicate holds the request open until the output is there
or n seconds pass, so most predictions cost one request and no polling. One that outlasts the wait is
polled, in turns shared by every prediction in flight, so the polling rate does not grow with how
many run at once. A 429 answer to a create is ridden out: every create waits for the time the server
asked for (its Retry-After, else a growing pause), up to `patience` in all. A stop cancels the
prediction as soon as its id is known; n bounds how long that can take.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..base import EngineError
from .client import DEFAULT_RETRY_AFTER_S, MAX_RETRY_AFTER_S, RateLimited, calling, explain, rate_limited_text

TERMINAL = ("succeeded", "failed", "canceled")
SYNC_WAIT_S = 10  # seconds a create waits for its output; also the longest a stop waits for an id
MAX_SYNC_WAIT_S = 60  # Replicate's own bound for Prefer: wait=n
RATE_LIMIT_PATIENCE_S = 600.0  # 429s ridden out per request before the job gives up


class Stopped(Exception):
    """The flight was stopped: this prediction was canceled (or never created)."""


class PredictionFailed(Exception):
    """This prediction failed, timed out or gave no image: worth one more try with the same input."""


class Pacing:
    """Shared by one engine's predictions: poll turns spaced `interval` apart whatever the number in
    flight, and the moment a 429 lets creates go again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._creates_from = 0.0

    def poll_turn(self, interval: float, stop: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next_poll)
            self._next_poll = turn + interval
        stop.wait(max(0.0, turn - now))

    def hold_creates(self, seconds: float) -> None:
        with self._lock:
            self._creates_from = max(self._creates_from, time.monotonic() + seconds)

    def create_turn(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                wait = self._creates_from - time.monotonic()
            if wait <= 0:
                return
            if stop.wait(wait):
                raise Stopped()


def ridden_out(send: Callable[[], Any], action: str, pacing: Pacing, stop: threading.Event,
               patience: float = RATE_LIMIT_PATIENCE_S) -> Any:
    """`send()` (a POST that creates something), sent again after each 429 once the server's retry
    time has passed; every other create of this engine waits that long too."""
    waited, pause = 0.0, DEFAULT_RETRY_AFTER_S
    while True:
        pacing.create_turn(stop)
        if stop.is_set():
            raise Stopped()
        try:
            return send()
        except RateLimited as limited:
            wait = limited.retry_after if limited.retry_after is not None else pause
            pause = min(pause * 2, MAX_RETRY_AFTER_S)
            if waited + wait > patience:
                raise EngineError(rate_limited_text(action)) from None
            waited += wait
            pacing.hold_creates(wait)


def run_prediction(client, model: str, inputs: dict, action: str, *, pacing: Pacing, stop: threading.Event,
                   timeout: float, poll_interval: float, sync_wait: int = SYNC_WAIT_S,
                   patience: float = RATE_LIMIT_PATIENCE_S, url: str = "") -> str:
    """The output URL of one prediction of `model` on `inputs`. Raises PredictionFailed (try again),
    Stopped (the flight stopped; the prediction was canceled) or EngineError (no use trying again:
    a refused token, a missing model, input Replicate rejects; `url` names where it was sent)."""
    import httpx
    from replicate.exceptions import ReplicateError

    deadline = time.monotonic() + timeout
    wait = int(max(1, min(sync_wait, MAX_SYNC_WAIT_S, deadline - time.monotonic())))

    def create():
        if ":" in model:  # owner/name:version → the versioned endpoint
            return client.predictions.create(version=model.split(":", 1)[1], input=inputs, wait=wait)
        return client.models.predictions.create(model=model, input=inputs, wait=wait)  # official models

    with calling(action, url):  # what is no use trying again, in words
        try:
            prediction = ridden_out(create, action, pacing, stop, patience)
        except ReplicateError as exc:
            if (exc.status or 0) < 500:
                raise
            raise PredictionFailed(explain(exc, action)) from None
        except httpx.TimeoutException:
            raise PredictionFailed(f"Replicate did not answer in time while {action}") from None
    try:
        while prediction.status not in TERMINAL:
            if stop.is_set():
                raise Stopped()
            if time.monotonic() > deadline:
                raise PredictionFailed(f"Replicate took longer than {timeout:g} s {action} with {model}; "
                                       "the prediction was canceled")
            pacing.poll_turn(poll_interval, stop)
            if not stop.is_set():
                prediction.reload()
    except (Stopped, PredictionFailed):
        cancel_quietly(prediction)
        raise
    except (ReplicateError, httpx.HTTPError) as exc:
        cancel_quietly(prediction)
        raise PredictionFailed(f"Lost track of the prediction while {action} ({type(exc).__name__})") from None
    if prediction.status != "succeeded":
        reason = prediction.error or prediction.status
        raise PredictionFailed(f"Replicate {prediction.status} while {action} with {model}: {reason}")
    url = first_url(prediction.output)
    if not url:
        raise PredictionFailed(f"Replicate returned no image while {action} with {model}")
    return url


def cancel_quietly(job: Any, attempts: int = 5) -> None:
    """Cancel, sent again after a 429 (a stop must leave nothing running); any other failure is let
    go: the error the user needs is the one that made us cancel."""
    for _ in range(attempts):
        try:
            job.cancel()
            return
        except RateLimited as limited:
            time.sleep(min(limited.retry_after or DEFAULT_RETRY_AFTER_S, 10.0))
        except Exception:  # noqa: BLE001
            return


def first_url(output: Any) -> str | None:
    if isinstance(output, (list, tuple)):
        output = output[0] if output else None
    if isinstance(output, dict):
        output = output.get("image") or output.get("url")
    return str(output) if output else None
