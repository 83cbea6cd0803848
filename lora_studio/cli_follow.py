"""A CLI command following its job to the end, and Ctrl-C.

Ctrl-C anywhere in a command asks the jobs this process runs to stop, as the page's Stop does (a model
stops at its next step, a download keeps its bytes), waits a moment for them to end, and leaves with
one sentence and exit status 130: never a traceback, and never a record left "running" by a live
process. Should a job not end in time (a stalled connection), the process ends anyway: a record whose
process is gone is taken over by the next command (job_holders.py).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from .jobs import JobView

STOP_WAIT = 15.0  # seconds Ctrl-C waits for the jobs to end: a model step, a last chunk of bytes
EXIT_STOPPED = 130  # what shells report for a command ended by SIGINT


class Stopped(Exception):
    """The user pressed Ctrl-C; the message is the sentence the command leaves with."""


def said(view: "JobView") -> str:
    return f"Stopped: {view.title} is {view.status if view.done else 'stopping'}."


@contextmanager
def stopping_on_ctrl_c(studio, sentence: Callable[["JobView"], str] = said) -> Iterator[None]:
    """Within the block, Ctrl-C stops this process's jobs and raises Stopped with `sentence` of each."""
    try:
        yield
    except KeyboardInterrupt:
        views = stop(studio)
        raise Stopped(" ".join(sentence(view) for view in views) or "Stopped.") from None


def follow(studio, job_id: str, show: Callable[["JobView"], None], poll: float = 0.2) -> "JobView":
    """Show the job as it goes, until it ends."""
    while not (view := studio.jobs.get(job_id)).done:
        show(view)
        time.sleep(poll)
    show(view)
    return view


def stop(studio, wait: float = STOP_WAIT) -> list["JobView"]:
    """Ask every unfinished job this process holds to stop; wait up to `wait` s for them (a second
    Ctrl-C: no wait). Returns them as they are then."""
    jobs = studio.jobs
    try:
        mine = [j.id for j in jobs.list() if not j.done and jobs.held_here(j.id)]
        for job_id in mine:
            jobs.cancel(job_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(jobs.get(job_id).done for job_id in mine):
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    return [jobs.get(job_id) for job_id in mine]
