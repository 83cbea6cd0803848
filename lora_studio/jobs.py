"""One queue, one worker: every piece of model work runs here, in order.

Two people on a shared link must not run one GPU out of memory, so all generation, training and
testing goes through a single worker thread. Each job is a store record (status, progress, last
log lines, outputs, error) and two append-only files in `jobs/<id>/` (log.txt, metrics.jsonl); the
UI polls them, so closing the page loses nothing. On start-up, jobs left `running` by a dead process
become `interrupted` and can be resumed; jobs still `queued` are queued again.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import StudioError
from .progress import Canceled
from .store import Store

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "canceled", "interrupted",
)
FINISHED = (SUCCEEDED, FAILED, CANCELED, INTERRUPTED)
LOG_TAIL = 60
FLUSH_SECONDS = 0.25

Handler = Callable[[dict, "JobReporter"], "dict | None"]


class UserError(StudioError):
    """Raised by work for a reason the user can fix; its message is shown as is."""


@dataclass
class JobView:
    """A job as the UI and API see it."""

    id: str
    kind: str
    title: str
    status: str
    progress: float
    message: str
    error: str | None
    logs: list[str]
    outputs: dict
    params: dict
    created: float
    started: float | None
    finished: float | None
    metrics: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class JobReporter:
    """The Reporter handed to work: persists to the store, throttled so a fast loop stays fast."""

    def __init__(self, queue_: "JobQueue", job_id: str) -> None:
        self._queue = queue_
        self.job_id = job_id
        self.dir = queue_.store.job_dir(job_id)
        record = queue_.store.require("jobs", job_id)
        self._pending: dict[str, Any] = {}
        self._logs: list[str] = list(record.get("logs", []))
        self._outputs: dict[str, Any] = dict(record.get("outputs", {}))  # only this worker writes them
        self._last_flush = 0.0
        self._log_file = open(self.dir / "log.txt", "a", encoding="utf-8")
        self._metric_file = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")

    # Reporter protocol ----------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        self._log_file.write(line + "\n")
        self._log_file.flush()
        self._logs = (self._logs + [line])[-LOG_TAIL:]
        self._pending["logs"] = self._logs
        self._maybe_flush()

    def progress(self, fraction: float, message: str = "") -> None:
        self._pending["progress"] = max(0.0, min(1.0, float(fraction)))
        if message:
            self._pending["message"] = message
        self._maybe_flush()

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._metric_file.write(json.dumps({"name": name, "step": step, "value": float(value)}) + "\n")
        self._metric_file.flush()

    def output(self, key: str, value: Any) -> None:
        self.outputs({key: value})

    def outputs(self, values: dict[str, Any]) -> None:
        """Record results now (not throttled): the UI shows them as soon as they exist."""
        self._outputs.update(values)
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
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._queue.store.update("jobs", self.job_id, **self._pending)
            self._pending = {}
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._log_file.close()
        self._metric_file.close()


class JobQueue:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._handlers: dict[str, Handler] = {}
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def start(self) -> None:
        """Recover what a previous process left behind, then start the worker."""
        for job in self.store.find("jobs"):
            if job["status"] == RUNNING:
                self.store.update(
                    "jobs", job["id"], status=INTERRUPTED, finished=time.time(),
                    message="Interrupted: the app stopped while this job ran. Resume it to continue.",
                )
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="lora-studio-jobs", daemon=True)
            self._worker.start()
        for job in self.store.find("jobs", status=QUEUED):
            self._queue.put(job["id"])

    def stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)
            self._worker = None

    # ---- public API ------------------------------------------------------------------------
    def submit(self, kind: str, params: dict, title: str = "", **fields: Any) -> JobView:
        if kind not in self._handlers:
            raise ValueError(f"Unknown job kind {kind!r}.")
        record = self.store.insert(
            "jobs",
            dict(kind=kind, title=title or kind, status=QUEUED, progress=0.0, message="Queued",
                 error=None, logs=[], outputs={}, params=params, started=None, finished=None,
                 attempts=0, **fields),
        )
        self._queue.put(record["id"])
        return self.get(record["id"])

    def resume(self, job_id: str) -> JobView:
        """Queue an interrupted, failed or canceled job again under the same id (same work dir)."""
        job = self.store.require("jobs", job_id)
        if job["status"] not in (INTERRUPTED, FAILED, CANCELED):
            raise UserError(f"Job {job_id} is {job['status']}; only stopped jobs can be resumed.")
        with self._lock:
            self._cancel.discard(job_id)
        self.store.update("jobs", job_id, status=QUEUED, message="Queued (resume)", error=None,
                          finished=None)
        self._queue.put(job_id)
        return self.get(job_id)

    def cancel(self, job_id: str) -> JobView:
        job = self.store.require("jobs", job_id)
        if job["status"] == QUEUED:
            self.store.update("jobs", job_id, status=CANCELED, finished=time.time(),
                              message="Canceled before it started.")
        elif job["status"] == RUNNING:
            with self._lock:
                self._cancel.add(job_id)
            self.store.update("jobs", job_id, message="Stopping…")
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    def get(self, job_id: str, with_metrics: bool = False) -> JobView:
        job = self.store.require("jobs", job_id)
        metrics = self.read_metrics(job_id) if with_metrics else {}
        return JobView(
            id=job["id"], kind=job["kind"], title=job.get("title", ""), status=job["status"],
            progress=job.get("progress", 0.0), message=job.get("message", ""),
            error=job.get("error"), logs=job.get("logs", []), outputs=job.get("outputs", {}),
            params=job.get("params", {}), created=job.get("created", 0.0),
            started=job.get("started"), finished=job.get("finished"), metrics=metrics,
        )

    def list(self, kind: str | None = None, **equals: Any) -> list[JobView]:
        if kind:
            equals["kind"] = kind
        return [self.get(j["id"]) for j in self.store.find("jobs", **equals)]

    def read_metrics(self, job_id: str) -> dict[str, list[tuple[int | None, float]]]:
        path = self.store.job_dir(job_id) / "metrics.jsonl"
        out: dict[str, list[tuple[int | None, float]]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                out.setdefault(row["name"], []).append((row.get("step"), row["value"]))
        return out

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.05) -> JobView:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.get(job_id)
            if view.done:
                return view
            time.sleep(poll)
        raise TimeoutError(f"Job {job_id} did not finish within {timeout:.0f} s.")

    def wait_idle(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return
            time.sleep(0.05)
        raise TimeoutError("The job queue did not drain.")

    # ---- worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self._idle.clear()
            try:
                self._run_one(job_id)
            finally:
                self._idle.set()

    def _run_one(self, job_id: str) -> None:
        job = self.store.get("jobs", job_id)
        if job is None or job["status"] != QUEUED:
            return
        self.store.update("jobs", job_id, status=RUNNING, started=time.time(), message="Running",
                          attempts=job.get("attempts", 0) + 1)
        reporter = JobReporter(self, job_id)
        status, error, message = SUCCEEDED, None, "Done"
        try:
            result = self._handlers[job["kind"]](job["params"], reporter) or {}
            reporter.outputs(result)
            reporter.progress(1.0)
            message = result.get("summary") or message  # work may say what it did in one line
        except Canceled as exc:
            status, message = CANCELED, str(exc) or "Canceled."
            reporter.log(message)
        except Exception as exc:  # noqa: BLE001 - any failure must end up on the job record
            status, error = FAILED, describe_error(exc)
            message = f"Failed: {error}"
            reporter.log(message)
            (reporter.dir / "log.txt").open("a", encoding="utf-8").write(traceback.format_exc())
        finally:
            reporter.close()
            with self._lock:
                self._cancel.discard(job_id)
        self.store.update("jobs", job_id, status=status, error=error, message=message,
                          finished=time.time())


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the user; our own error types already carry one."""
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError)):
        text = str(exc)
        return text.strip("'\"") if isinstance(exc, KeyError) else text
    name = type(exc).__name__
    if "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory. Pick a lighter memory mode (8-bit or 4-bit base, "
                "gradient checkpointing) or a lower resolution.")
    return f"Unexpected {name}: {exc}"
