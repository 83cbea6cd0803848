"""The GPU lane's gate. The worker passes through it for each job; an engine switch
(`Studio.reconfigure`) holds it, so no job ever runs across half a switch and queued jobs wait for it.
Downloads run on the side lane, which has a gate of its own that nothing holds: they use no engine.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import UserError


class JobGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> "JobGate":  # the worker: wait for a switch in progress, then run the job
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    @contextmanager
    def hold(self, refusal: str) -> Iterator[None]:
        """No job runs inside this block; `refusal` (a UserError) when one runs now."""
        if not self._lock.acquire(blocking=False):
            raise UserError(refusal)
        try:
            yield
        finally:
            self._lock.release()
