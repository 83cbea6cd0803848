"""Whose a job is, and who may see and control it.

On a shared link the generic job endpoints (`/list_jobs`, `/job_status`, `/cancel_job`,
`/resume_job`) are open to anyone, yet the owner's jobs (a 30 GB download, a training the Space's
author started) are not a visitor's to watch, stop or restart. Each record is stamped at creation with
who asked (`by`): the owner, or a visitor (with their login name when they have one). The rule:

- the owner sees and controls every job;
- a job of an owner-only kind (downloads), or one the owner started, is the owner's alone;
- a logged-in visitor's job is theirs (and the owner's); an anonymous visitor's job stays open to
  visitors, as there is nothing to tell anonymous visitors apart by.

The queue asks `JobQueue.asking()` who is asking when it stamps a record; the UI installs the answer
(ui/owner.py). Without one (the CLI, scripts, a restart resuming downloads) the asker is the owner.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    owner: bool
    visitor: str | None = None  # a logged-in visitor's name; None when anonymous (or the owner)

    def stamp(self) -> dict:
        return {"owner": True} if self.owner else {"owner": False, "visitor": self.visitor}


OWNER = Requester(True)
ANONYMOUS = Requester(False)


def may_see(record: dict, who: Requester, owner_kinds: frozenset[str] | set[str] = frozenset()) -> bool:
    if who.owner:
        return True
    if record.get("kind") in owner_kinds:
        return False
    by = record.get("by")
    if by is None:
        return True  # a record from before stamps: as open as it always was (owner-only kinds excepted)
    if not isinstance(by, dict) or by.get("owner") is not False:
        return False  # the owner's, or a stamp that cannot be read: closed
    name = by.get("visitor")
    return name is None or name == who.visitor
