"""How training worker processes talk to the app: files in the job's `worker/` folder, nothing else.

    jobs/<id>/worker/spec.json     what to train and how (written by the app, read by every rank)
    jobs/<id>/worker/events.jsonl  one JSON object a line, appended by the workers
    jobs/<id>/worker/heartbeat     touched by rank 0 whenever it reports (its mtime is the beat)
    jobs/<id>/worker/cancel        made by the app when the user stops the job
    jobs/<id>/worker/pids/rank_N   each rank's process id, so every one can be stopped by id

Each event is written with one `os.write` on a file opened with O_APPEND, so lines from several
ranks never interleave, and the app reads only up to the last newline, so a line a crash cut short is
never half-read. Files, not a socket: a worker on a second machine that shares the workspace (see
the README) reports the same way, and the record survives the app restarting.

Rank 0's `EventWriter` is the trainer's Reporter there; the app's `EventTail` replays the events
into the job's own reporter, so the Training tab, `/job_status` and the CLI see the same job as an
in-process run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..progress import Canceled

EVENTS, HEARTBEAT, CANCEL, PIDS, SPEC = "events.jsonl", "heartbeat", "cancel", "pids", "spec.json"
REPLAYED = ("log", "progress", "metric", "output")  # the Reporter calls; the rest end the run


def append_event(folder: Path, kind: str, **fields: Any) -> None:
    line = (json.dumps({"kind": kind, "time": time.time(), **fields}, default=str) + "\n").encode("utf-8")
    fd = os.open(Path(folder) / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def beat(folder: Path) -> None:
    path = Path(folder) / HEARTBEAT
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def write_pid(folder: Path, rank: int) -> Path:
    pids = Path(folder) / PIDS
    pids.mkdir(parents=True, exist_ok=True)
    path = pids / f"rank_{rank}"
    path.write_text(str(os.getpid()), encoding="utf-8")
    return path


def read_pids(folder: Path) -> dict[int, int]:
    """{rank: pid} of every worker that started."""
    found = {}
    for path in (Path(folder) / PIDS).glob("rank_*"):
        try:
            found[int(path.name.removeprefix("rank_"))] = int(path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue
    return found


class EventWriter:
    """The Reporter rank 0 trains with: every call becomes an event (and a heartbeat)."""

    def __init__(self, folder: Path, app_pid: int | None = None) -> None:
        self.folder = Path(folder)
        self.app_pid = app_pid

    def _event(self, kind: str, *args: Any) -> None:
        append_event(self.folder, kind, args=list(args))
        beat(self.folder)

    def log(self, message: str) -> None:
        self._event("log", message)

    def progress(self, fraction: float, message: str = "") -> None:
        self._event("progress", fraction, message)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._event("metric", name, float(value), step)

    def output(self, key: str, value: Any) -> None:
        self._event("output", key, value)

    @property
    def cancel_requested(self) -> bool:
        beat(self.folder)  # asked before every step and encoding: a live loop keeps beating
        return (self.folder / CANCEL).exists() or not self._app_alive()

    def _app_alive(self) -> bool:
        """The app that launched us still runs; if it died, stop with a checkpoint (its restart resumes)."""
        if not self.app_pid:
            return True
        try:
            os.kill(self.app_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def check_cancel(self) -> None:
        if self.cancel_requested:
            raise Canceled("Canceled by the user.")


class QuietReporter:
    """The Reporter of ranks above 0: they train their shard and say nothing (rank 0 speaks for all)."""

    cancel_requested = False

    def log(self, message: str) -> None:
        pass

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def output(self, key: str, value: Any) -> None:
        pass

    def check_cancel(self) -> None:
        pass


class EventTail:
    """Reads the events appended since the last call (whole lines only)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / EVENTS
        self.offset = 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("kind"), str):
                events.append(event)
        return events
