"""Which process holds a job record, so a second process on the same workspace leaves it alone.

The app and a CLI command may share a workspace (the page suggests `python -m lora_studio models
list`). A record `running` or `queued` is only orphaned when the process that queued it is gone:
each started queue holds an exclusive lock on its own file, `jobs/.holders/<token>.lock`, for as long
as it lives, and stamps its token on the records it queues and runs. The operating system drops the
lock when the process ends, however it ends (kill -9 included), so "can I take this lock?" answers
"is that holder alive?" with no heartbeat to tune and no process id that could be reused.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

FOLDER = ".holders"
_TOKEN = re.compile(r"[0-9a-f]{32}")

try:  # POSIX
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class JobHolder:
    """This process's claim on the records it queues; `alive(token)` tells whether another claim holds."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root) / "jobs" / FOLDER
        self.token = uuid.uuid4().hex
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> None:
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / f"{self.token}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)
            (self.folder / f"{self.token}.lock").unlink(missing_ok=True)

    def alive(self, token) -> bool:
        """Whether the queue that stamped `token` still runs (this one counts while it holds its lock)."""
        if token == self.token:
            return self.held
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return False  # no stamp (an older version's record) or a damaged one: nobody holds it
        path = self.folder / f"{token}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False  # the file went with its process's clean stop
        try:
            _lock(fd)
        except OSError:
            return True  # locked: that process is alive
        else:
            _unlock(fd)
            path.unlink(missing_ok=True)  # left by a process that died: nobody will take it again
            return False
        finally:
            os.close(fd)
