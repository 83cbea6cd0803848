"""The Reporter a job's work is handed: progress, log lines, metrics and outputs, kept in the job's
record and its files, throttled so a fast loop stays fast.

What it puts in the record is bounded and worded for anyone holding the link: `studio.json` is
rewritten whole on every update and `/job_status` serves the record, so a log line is cut at
`LINE_CHARS` there (log.txt, which is never served, keeps up to `FILE_LINE_CHARS` of it) and
absolute paths become what they are ("the job's cache", "your model folder") or their last name
(`JobQueue.for_strangers`).

It also hears the job's model steps (progress.hearing_steps, installed by the worker): each one checks
for a stop and shows "step 12/28 · 3.1 s/step · ~40 s left" after the service's own words, the bar
moving through the image's share of the job. The store is written at most every FLUSH_SECONDS, and
what waits is written FLUSH_SECONDS later even when nothing follows (a stalled download, a VAE decode),
so the page never shows an older state than the work's.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .job_records import bounded
from .progress import Canceled
from .step_clock import StepClock

if TYPE_CHECKING:
    from .jobs import JobQueue

LOG_TAIL = 60
LINE_CHARS = 2000  # one log line in the record
FILE_LINE_CHARS = 100_000  # one log line in log.txt
FLUSH_SECONDS = 0.25


class JobReporter:
    """The Reporter handed to work: persists to the store, throttled so a fast loop stays fast.

    Outputs are stored workspace-relative: a path never reaches a record or a reply absolute.
    """

    def __init__(self, queue_: "JobQueue", job_id: str) -> None:
        self._queue = queue_
        self.job_id = job_id
        self.dir = queue_.store.job_dir(job_id)
        record = queue_.store.require("jobs", job_id)
        self._pending: dict[str, Any] = {}
        logs = record.get("logs") if isinstance(record.get("logs"), list) else []
        self._logs: list[str] = [bounded(str(x), LINE_CHARS) for x in logs][-LOG_TAIL:]
        self._outputs: dict[str, Any] = dict(record.get("outputs", {}))  # only this worker writes them
        self._last_flush = 0.0
        self._lock = threading.RLock()  # the late flush runs on a timer thread
        self._late: threading.Timer | None = None
        self._closed = False
        self._at = 0.0  # the job's progress as the service last set it: a step moves the bar on from there
        self._said = ""  # the service's own words for where the job is: steps are shown after them
        self._share: float | None = None  # of the job's progress, per image a model pass draws
        self._clock = StepClock()
        self._log_file = open(self.dir / "log.txt", "a", encoding="utf-8")
        self._metric_file = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")

    # Reporter protocol ----------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        shown = self._queue.for_strangers(self.job_id, line, LINE_CHARS)
        self._logs = (self._logs + [shown])[-LOG_TAIL:]
        with self._lock:
            self._pending["logs"] = self._logs
        self._log_file.write(bounded(line, FILE_LINE_CHARS) + "\n")
        self._log_file.flush()
        self._maybe_flush()

    def progress(self, fraction: float, message: str = "") -> None:
        self._at = max(0.0, min(1.0, float(fraction)))
        self._said = str(message) if message else self._said
        self._show(self._at, message)

    def next_images(self, words: str, share: float | None) -> None:
        """What the steps heard next are shown after ("3/30 variations done") and each image's share of
        the job's progress (None: the rest of the job)."""
        self._said, self._share = str(words), share

    def step(self, done: int, total: int, images: int = 1) -> None:
        """A model step ended (progress.StepListener): a stop lands here, and the step is shown."""
        self.check_cancel()
        total = max(1, int(total))
        share = (1.0 - self._at) if self._share is None else self._share * max(1, int(images))
        fraction = min(self._at + share * min(1.0, max(0, done) / total), 0.999)
        text = self._clock.tick(int(done), total)
        self._show(max(self._at, fraction), f"{self._said} · {text}" if self._said else text)

    def _show(self, fraction: float, message: str) -> None:
        with self._lock:
            self._pending["progress"] = fraction
            if message:
                self._pending["message"] = str(message)  # worded for the record when it is written (flush)
        self._maybe_flush()

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._metric_file.write(json.dumps({"name": name, "step": step, "value": float(value)}) + "\n")
        self._metric_file.flush()

    def output(self, key: str, value: Any) -> None:
        self.outputs({key: value})

    def outputs(self, values: dict[str, Any]) -> None:
        """Record results now (not throttled): the UI shows them as soon as they exist."""
        self._outputs.update(self._queue.store.relative(values))
        with self._lock:
            self._pending["outputs"] = dict(self._outputs)
        self.flush()

    @property
    def cancel_requested(self) -> bool:
        return self._queue.cancel_requested(self.job_id)

    def check_cancel(self) -> None:
        if self.cancel_requested:
            raise Canceled("Canceled by the user.")

    # ----------------------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        wait = FLUSH_SECONDS - (time.monotonic() - self._last_flush)
        if wait <= 0:
            self.flush()
            return
        with self._lock:
            if self._late is None and not self._closed:
                self._late = threading.Timer(wait, self._flush_late)
                self._late.daemon = True
                self._late.start()

    def _flush_late(self) -> None:
        with self._lock:
            self._late = None
            if not self._closed:
                quietly(self.flush)  # a disk that refuses it: written with the next flush, or the status

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, {}
                try:
                    self._queue.store.update("jobs", self.job_id, **self._worded(pending))
                except BaseException:
                    self._pending = {**pending, **self._pending}  # written with the next flush
                    raise
            self._last_flush = time.monotonic()

    def pending_fields(self) -> dict[str, Any]:
        """What has not reached the store yet (the failure path writes it with the status)."""
        with self._lock:
            return self._worded(self._pending)

    def _worded(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The progress message as a record keeps it (once per write, not per call: a download reports
        every chunk). Once a stop is asked the record keeps saying "Stopping…" until the job ends: a
        progress line queued before the stop must not write over it."""
        if "message" not in fields:
            return dict(fields)
        if self.cancel_requested:
            return {k: v for k, v in fields.items() if k != "message"}
        return {**fields, "message": self._queue.for_strangers(self.job_id, fields["message"], LINE_CHARS)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._late is not None:
                self._late.cancel()
                self._late = None
        try:
            self.flush()
        finally:
            for handle in (self._log_file, self._metric_file):
                quietly(handle.close)

    def append_trace(self, text: str) -> None:
        self._log_file.write(text)
        self._log_file.flush()


def quietly(fn: Callable, *args) -> None:
    """Best effort: used on the failure path, which must not fail in turn."""
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001
        warn(f"{getattr(fn, '__name__', 'cleanup')} failed: {exc}")


def warn(text: str) -> None:
    try:
        print(f"lora-studio: {text}", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - stderr itself may be gone
        pass
