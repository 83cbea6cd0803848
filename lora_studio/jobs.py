"""One queue, one worker: every piece of model work runs here, in order.

Two people on a shared link must not run one GPU out of memory, so all generation, training and
testing goes through a single worker thread. Each job is a store record (status, progress, last
log lines, outputs, error) and two append-only files in `jobs/<id>/` (log.txt, metrics.jsonl); the
UI polls them, so closing the page loses nothing. On start-up, jobs left `running` by a dead process
become `interrupted` and can be resumed; jobs still `queued` are queued again. A record whose
process still runs (the app, while a CLI command opens the same workspace) is left to it
(job_holders.py); a queue that is never started (a read-only command) takes no job at all.

The worker never dies: whatever a job raises, even while its failure is being written (a full
disk), is caught; a status that cannot be written is kept and written again when the disk allows,
and the next job runs. The queue is bounded (`QueueLimits`), so a stranger cannot bury it.

History is bounded too: the store rewrites `studio.json` whole on each write, so a stranger's ten
thousand generations would slow every click. Past the newest few hundred ended jobs of a quick kind,
a record moves to `jobs/<id>/record.json` beside its log; it still opens by id, its files stay.
"""
from __future__ import annotations

import json
import queue
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import UserError  # noqa: F401 (re-exported: services raise it)
from .errors import NotFound
from .job_access import ANONYMOUS, OWNER, Requester, may_see  # noqa: F401 (ANONYMOUS re-exported: the UI)
from .job_gate import JobGate
from .job_holders import JobHolder
from .job_records import (  # noqa: F401 (re-exported: the UI and services import them from here)
    CANCELED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED, JobView, describe_error, typed_handler,
)
from .job_records import bounded, name_paths
from .job_reporter import JobReporter, quietly, warn  # noqa: F401 (JobReporter re-exported: services type with it)
from .progress import Canceled, hearing_steps
from .store import Store, atomic_write_json
from .typed_json import to_json

RETRY_SECONDS = 5.0  # how often a status the disk refused is written again
ERROR_CHARS = 4000  # a job's error and message in its record (a worker's failure may be megabytes)

Handler = Callable[[Any, "JobReporter"], "dict | None"]  # given the kind's params (a dataclass) or the dict


@dataclass(frozen=True)
class QueueLimits:
    """How many jobs may wait at once: one GPU serves them in order, so more only buries the queue."""

    waiting: int = 20
    per_kind: int = 8
    kinds: dict = field(default_factory=lambda: {"train": 3, "sheet": 4})
    # ended jobs of these kinds kept in the live list; older ones move beside their logs
    listed: dict = field(default_factory=lambda: {"generate": 200, "sweep": 100})

    def for_kind(self, kind: str) -> int:
        return self.kinds.get(kind, self.per_kind)


class JobQueue:
    """`side_kinds` run on a second worker (downloads: network and disk, never the GPU), so they
    neither wait behind a training nor hold one up."""

    def __init__(self, store: Store, limits: QueueLimits | None = None, side_kinds: tuple[str, ...] = ()) -> None:
        self.store = store
        self.limits = limits or QueueLimits()
        self._handlers: dict[str, Handler] = {}
        self.owner_kinds: set[str] = set()  # kinds only the owner sees and controls (job_access.py)
        self.asking: Callable[[], Requester] = lambda: OWNER  # who is asking now; the UI tells (ui/owner.py)
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self.side_kinds = frozenset(side_kinds)
        self._side: "queue.Queue[str | None]" = queue.Queue()
        self._side_worker: threading.Thread | None = None
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._unrecorded: dict[str, dict] = {}  # job id -> fields the disk refused; written again later
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self.gate = JobGate()  # GPU-lane jobs run through it; an engine switch holds it (studio.py)
        self.holder = JobHolder(store.root)  # stamped on the records this process queues and runs
        self.places: tuple[tuple[Path, str], ...] = ()  # folders named in words in records (Studio sets them)

    def register(self, kind: str, handler: Handler, params: type | None = None, owner_only: bool = False) -> None:
        """`params`: the dataclass this kind's stored params are read back as (services/job_params.py);
        `owner_only`: only the owner sees and controls this kind's jobs (downloads)."""
        self._handlers[kind] = handler if params is None else typed_handler(handler, params)
        if owner_only:
            self.owner_kinds.add(kind)

    def start(self) -> None:
        """Recover what a dead process left behind (a live one keeps its jobs), then start the worker."""
        self.holder.hold()
        orphans = [j for j in self.store.find("jobs") if j.get("status") in (RUNNING, QUEUED)
                   and isinstance(j.get("id"), str) and not self.holder.alive(j.get("holder"))]
        for job in orphans:
            if job.get("status") == RUNNING:
                self.store.update(
                    "jobs", job["id"], status=INTERRUPTED, finished=time.time(),
                    message="Interrupted: the app stopped while this job ran. Resume it to continue.",
                )
            else:
                self.store.update("jobs", job["id"], holder=self.holder.token)
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="lora-studio-jobs", daemon=True)
            self._worker.start()
        if self.side_kinds and self._side_worker is None:
            self._side_worker = threading.Thread(target=self._run, args=(self._side,), daemon=True,
                                                 name="lora-studio-side-jobs")
            self._side_worker.start()
        for job in orphans:
            if job.get("status") == QUEUED:
                self._lane(job.get("kind")).put(job["id"])

    def _lane(self, kind) -> "queue.Queue[str | None]":
        return self._side if kind in self.side_kinds else self._queue

    def stop(self) -> None:
        for lane, worker in ((self._side, self._side_worker), (self._queue, self._worker)):
            if worker is not None:
                lane.put(None)  # a download keeps its bytes: the next start resumes it, so no long wait for it
                worker.join(timeout=30 if lane is self._queue else 2)
        if not any(w is not None and w.is_alive() for w in (self._worker, self._side_worker)):
            self.holder.release()  # else a job still runs here: its record stays ours until the process ends
        self._worker = self._side_worker = None

    # ---- public API ------------------------------------------------------------------------
    def submit(self, kind: str, params: Any, title: str = "", **fields: Any) -> JobView:
        if kind not in self._handlers:
            raise ValueError(f"Unknown job kind {kind!r}.")
        with self._submit_lock:  # count and insert as one step, so parallel submits cannot overfill
            self._check_room(kind)
            record = self.store.insert(
                "jobs",
                dict(kind=kind, title=title or kind, status=QUEUED, progress=0.0, message="Queued",
                     error=None, logs=[], outputs={}, params=to_json(params), started=None, finished=None,
                     attempts=0, holder=self.holder.token, by=self.asking().stamp(), **fields),
            )
        self._lane(kind).put(record["id"])
        return self.get(record["id"])

    def _check_room(self, kind: str) -> None:
        waiting = [j for j in self.store.find("jobs") if j.get("status") == QUEUED]
        same = sum(1 for j in waiting if j.get("kind") == kind)
        if same >= self.limits.for_kind(kind):
            raise UserError(f"{same} {kind} jobs are already waiting (the limit is {self.limits.for_kind(kind)}). "
                            "Wait for one to finish, or cancel one under Library → All jobs.")
        if len(waiting) >= self.limits.waiting:
            raise UserError(f"{len(waiting)} jobs are already waiting (the limit is {self.limits.waiting}). "
                            "Wait for some to finish, or cancel one under Library → All jobs.")

    def resume(self, job_id: str, seen_by: Requester | None = None) -> JobView:
        """Queue an interrupted, failed or canceled job again under the same id (same work dir), or one
        whose process is gone while it ran (this queue takes it over).
        `seen_by` (here and in get, list, cancel): answer as that requester may see the jobs."""
        self._check_seen(job_id, seen_by)
        def requeue(job: dict) -> None:
            stopped = job.get("status") in (INTERRUPTED, FAILED, CANCELED) or self._orphan(job)
            if not stopped or job_id in self._unrecorded:
                raise UserError(f"Job {job_id} is {job.get('status')}; only stopped jobs can be resumed.")
            job.update(status=QUEUED, message="Queued (resume)", error=None, finished=None, holder=self.holder.token)

        with self._submit_lock:
            job = self.store.require("jobs", job_id)
            self._check_room(str(job.get("kind")))
            with self._lock:
                self._cancel.discard(job_id)
            self.store.mutate("jobs", job_id, requeue)
        self._lane(job.get("kind")).put(job_id)
        return self.get(job_id)

    def cancel(self, job_id: str, seen_by: Requester | None = None) -> JobView:
        self._check_seen(job_id, seen_by)

        def stop(job: dict) -> None:
            if job.get("status") == QUEUED:
                job.update(status=CANCELED, finished=time.time(), message="Canceled before it started.")
            elif self._orphan(job):  # its process is gone: nothing would ever see a stop request
                job.update(status=CANCELED, finished=time.time(), message="Canceled (the process running it had ended).")
            elif job.get("status") == RUNNING:
                with self._lock:
                    self._cancel.add(job_id)
                job["message"] = "Stopping…"

        self.store.mutate("jobs", job_id, stop)  # atomic: the worker cannot start it halfway through
        return self.get(job_id)

    def _orphan(self, job: dict) -> bool:
        """Running or queued, but the process that holds it is gone (killed, or it ended mid-job)."""
        return job.get("status") in (RUNNING, QUEUED) and not self.holder.alive(job.get("holder"))

    def orphaned(self, job_id: str) -> bool:
        return self._orphan(self.store.get("jobs", job_id) or {})

    def held_here(self, job_id: str) -> bool:
        """Whether this queue runs or queued this job (not another process on the workspace)."""
        return (self.store.get("jobs", job_id) or {}).get("holder") == self.holder.token and self.holder.held

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    def get(self, job_id: str, with_metrics: bool = False, seen_by: Requester | None = None) -> JobView:
        record = self.store.get("jobs", job_id) or _moved_record(self.store, job_id)
        if record is None:
            record = self.store.require("jobs", job_id)  # raises the usual "No job with id …"
        if seen_by is not None and not may_see(record, seen_by, self.owner_kinds):
            raise NotFound(f"No job with id {job_id!r}.")  # as if it did not exist: ids stay unguessed
        view = JobView.from_record(record)
        if with_metrics:
            view.metrics = self.read_metrics(job_id)
        return view

    def list(self, kind: str | None = None, *, seen_by: Requester | None = None, **equals: Any) -> list[JobView]:
        """Every job (of a kind); a damaged record shows as a failed job instead of breaking the list."""
        if kind:
            equals["kind"] = kind
        return [JobView.from_record(j) for j in self.store.find("jobs", **equals)
                if seen_by is None or may_see(j, seen_by, self.owner_kinds)]

    def _check_seen(self, job_id: str, seen_by: Requester | None) -> None:
        if seen_by is not None:
            self.get(job_id, seen_by=seen_by)

    def read_metrics(self, job_id: str) -> dict[str, list[tuple[int | None, float]]]:
        path = _job_file(self.store, job_id, "metrics.jsonl")
        out: dict[str, list[tuple[int | None, float]]] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    out.setdefault(str(row["name"]), []).append((row.get("step"), float(row["value"])))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut by a crash or a full disk
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

    def for_strangers(self, job_id: str, text: str, limit: int = ERROR_CHARS) -> str:
        """`text` as a record keeps it: bounded, each server path named by what it is."""
        job, root = self.store.root / "jobs" / str(job_id), self.store.root
        places = ((job / "cache", "the job's cache"), (job / "checkpoints", "the job's checkpoints"),
                  (job / "output", "the job's output folder"), (job / "worker", "the job's worker folder"),
                  (job, "the job's folder"), (root / "datasets", "the data sets folder"), (root, "the workspace"))
        return name_paths(bounded(str(text), limit), (*places, *self.places))

    # ---- worker ----------------------------------------------------------------------------
    def _run(self, lane: "queue.Queue[str | None] | None" = None) -> None:
        lane = self._queue if lane is None else lane
        idle = self._idle if lane is self._queue else threading.Event()
        gate = self.gate if lane is self._queue else JobGate()  # downloads use no engine: nothing holds theirs
        while True:
            self._record_unrecorded()
            try:
                job_id = lane.get(timeout=RETRY_SECONDS if self._unrecorded else None)
            except queue.Empty:
                continue
            if job_id is None:
                return
            idle.clear()
            try:
                with gate:
                    self._run_one(job_id)
            except BaseException as exc:  # noqa: BLE001 - the one worker must outlive any job
                warn(f"job {job_id}: the worker caught {type(exc).__name__}: {exc}")
                error = self.for_strangers(job_id, describe_error(exc))
                self._finish(job_id, status=FAILED, error=error, message=f"Failed: {error}", finished=time.time())
            finally:
                idle.set()

    def _claim(self, job_id: str) -> dict | None:
        """Mark a queued job running, atomically; None if it is no longer queued (canceled, gone)."""
        claimed: dict = {}

        def start(job: dict) -> None:
            if job.get("status") == QUEUED:
                attempts = job.get("attempts") if isinstance(job.get("attempts"), int) else 0
                job.update(status=RUNNING, started=time.time(), message="Running", attempts=attempts + 1,
                           holder=self.holder.token)
                claimed.update(job)

        try:
            self.store.mutate("jobs", job_id, start)
        except KeyError:
            return None
        except OSError as exc:  # the disk refused even this: leave it queued and try again later
            warn(f"job {job_id} could not start ({exc}); trying again in {RETRY_SECONDS:.0f} s")
            timer = threading.Timer(RETRY_SECONDS, self._lane(claimed.get("kind")).put, [job_id])
            timer.daemon = True
            timer.start()
            return None
        return claimed or None

    def _run_one(self, job_id: str) -> None:
        job = self._claim(job_id)
        if job is None:
            return
        handler = self._handlers.get(job.get("kind"))
        reporter = None
        status, error, message = SUCCEEDED, None, "Done"
        try:
            reporter = JobReporter(self, job_id)
            if handler is None or not isinstance(job.get("params"), dict):
                raise UserError("This job was saved by another version of the app and cannot run; start it again.")
            with hearing_steps(reporter):  # the model's steps: progress per step, and a stop at the next one
                result = handler(job["params"], reporter) or {}
            reporter.outputs(result)
            reporter.progress(1.0)
            summary = result.get("summary") if isinstance(result, dict) else None
            message = self.for_strangers(job_id, summary) if isinstance(summary, str) and summary else message
        except Canceled as exc:
            status, message = CANCELED, self.for_strangers(job_id, str(exc) or "Canceled.")
        except BaseException as exc:  # noqa: BLE001 - any failure must end up on the job record
            status, error = FAILED, self.for_strangers(job_id, describe_error(exc))
            message = f"Failed: {error}"
            if reporter is not None:
                quietly(reporter.append_trace, traceback.format_exc())
        pending = {}
        if reporter is not None:
            if status != SUCCEEDED:
                quietly(reporter.log, message)
            quietly(reporter.close)
            pending = reporter.pending_fields()
        with self._lock:
            self._cancel.discard(job_id)
        final = dict(status=status, error=error, message=message, finished=time.time())
        self._finish(job_id, **{**pending, **final})  # unsaved progress and logs go with the status
        quietly(self._move_old, str(job.get("kind")))

    def _move_old(self, kind: str) -> None:
        """Keep the live list of a quick kind short: the oldest ended records move to their folders."""
        keep = self.limits.listed.get(kind)
        if keep is None:
            return
        ended = [j for j in self.store.find("jobs", kind=kind)
                 if j.get("status") in FINISHED and isinstance(j.get("id"), str) and _SAFE_ID.fullmatch(j["id"])]
        leaving = ended[:max(0, len(ended) - keep)]  # oldest first
        for job in leaving:  # every file is written before any record leaves
            atomic_write_json(self.store.job_dir(job["id"]) / MOVED_RECORD, job)
        if leaving:
            self.store.delete("jobs", [job["id"] for job in leaving])  # one rewrite of the database

    def _finish(self, job_id: str, **fields: Any) -> None:
        """Write a job's final fields; if the disk refuses, keep them and write them again later."""
        with self._lock:
            fields = {**self._unrecorded.pop(job_id, {}), **fields}
        try:
            self.store.update("jobs", job_id, **fields)
        except KeyError:
            pass  # the record is gone: nothing to mark
        except BaseException as exc:  # noqa: BLE001 - above all, the worker goes on
            warn(f"job {job_id}: its status could not be saved ({exc}); trying again in {RETRY_SECONDS:.0f} s")
            with self._lock:
                self._unrecorded[job_id] = fields

    def _record_unrecorded(self) -> None:
        with self._lock:
            waiting = list(self._unrecorded)
        for job_id in waiting:
            with self._lock:
                fields = self._unrecorded.pop(job_id, None)
            if fields is not None:
                self._finish(job_id, **fields)


MOVED_RECORD = "record.json"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _job_file(store: Store, job_id: str, name: str) -> Path | None:
    """A file in a job's folder, for reading (no folder is made); None for an id that is no name."""
    if not isinstance(job_id, str) or not _SAFE_ID.fullmatch(job_id):
        return None
    return store.root / "jobs" / job_id / name


def _moved_record(store: Store, job_id: str) -> dict | None:
    """A record moved out of the live list (see `_move_old`), or None."""
    path = _job_file(store, job_id, MOVED_RECORD)
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("id") == job_id else None
