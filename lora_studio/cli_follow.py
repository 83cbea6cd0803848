"""A CLI command following its job to the end, and Ctrl-C.

Ctrl-C asks the job to stop, as the page's Stop does (a model stops at its next step, a download keeps
its bytes), waits a moment for it to end, and leaves with one sentence and exit status 130: never a
traceback, and never a record left "running" by a live process. Should the job not end in time (a
stalled connection), the process ends anyway: a record whose process is gone is taken over by the next
command (job_holders.py).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .jobs import JobView

STOP_WAIT = 15.0  # seconds Ctrl-C waits for the job to end: a model step, a last chunk of bytes
EXIT_STOPPED = 130  # what shells report for a command ended by SIGINT


class Stopped(Exception):
    """The user pressed Ctrl-C; the message is the sentence the command leaves with."""


def follow(studio, job_id: str, show: Callable[["JobView"], None], stopped: Callable[["JobView"], str],
           poll: float = 0.2) -> "JobView":
    """Show the job as it goes until it ends; on Ctrl-C stop it and raise Stopped(stopped(job))."""
    try:
        while not (view := studio.jobs.get(job_id)).done:
            show(view)
            time.sleep(poll)
        show(view)
        return view
    except KeyboardInterrupt:
        raise Stopped(stopped(stop(studio, job_id))) from None


def stop(studio, job_id: str, wait: float = STOP_WAIT) -> "JobView":
    """Ask the job to stop and wait up to `wait` seconds for it to end (a second Ctrl-C: no wait)."""
    try:
        studio.jobs.cancel(job_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not studio.jobs.get(job_id).done:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    return studio.jobs.get(job_id)
