"""What a job looks like from outside the queue: its statuses, its view, and its error in words.

Records come from the store, which may hold ones written by older versions or damaged by hand;
`JobView.from_record` reads any of them, so one bad record never breaks a listing, and `typed_handler`
reads a job's params as its kind's dataclass, so a bad one fails that job in words. What a record
says is served to anyone holding the link: `bounded` and `name_paths` keep its text short and free
of server paths.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import StudioError, describe_os_error, is_out_of_memory
from .typed_json import from_json

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "canceled", "interrupted",
)
FINISHED = (SUCCEEDED, FAILED, CANCELED, INTERRUPTED)


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

    @classmethod
    def from_record(cls, job: dict) -> "JobView":
        """Read a stored record; one written by an older version or damaged by hand still reads."""
        def text(key, default=""):
            value = job.get(key, default)
            return value if isinstance(value, str) else default

        def number(key):
            value = job.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        status = text("status", FAILED)
        damaged = status not in (QUEUED, RUNNING, *FINISHED)
        logs = job.get("logs")
        return cls(
            id=str(job.get("id", "")), kind=text("kind", "unknown"), title=text("title") or text("kind", "job"),
            status=FAILED if damaged else status, progress=min(1.0, max(0.0, number("progress") or 0.0)),
            message=text("message"),
            error="This job's record is damaged; it cannot run or resume." if damaged else (job.get("error")
                                                                                           if isinstance(job.get("error"), str) else None),
            logs=[str(line) for line in logs] if isinstance(logs, list) else [],
            outputs=job.get("outputs") if isinstance(job.get("outputs"), dict) else {},
            params=job.get("params") if isinstance(job.get("params"), dict) else {},
            created=number("created") or 0.0, started=number("started"), finished=number("finished"))


def typed_handler(handler: Callable[[Any, Any], Any], params: type) -> Callable[[dict, Any], Any]:
    """A job handler that gets its stored params as `params` (a dataclass), each field checked: a record
    from another version or damaged by hand fails the job with a sentence naming the field."""
    def run(stored: dict, reporter):
        return handler(from_json(params, stored, "This job's saved settings"), reporter)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the user; our own error types already carry one. No server paths."""
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return ("The computer ran out of memory (RAM) for this job. Use a smaller size or resolution, or "
                "close other programs.")
    if isinstance(exc, (ValueError, KeyError)):
        text = str(exc)
        return _without_paths(text.strip("'\"") if isinstance(exc, KeyError) else text)
    wrapped = _wrapped_os_error(str(exc))
    if wrapped is not None:  # e.g. safetensors' "I/O error: No space left on device (os error 28)"
        return describe_os_error(wrapped)
    name = type(exc).__name__
    if is_out_of_memory(exc):
        return ("The GPU ran out of memory. Pick a lighter memory mode (8-bit or 4-bit base, "
                "gradient checkpointing) or a lower resolution.")
    return _without_paths(f"Unexpected {name}: {exc}")


_OS_ERROR = re.compile(r"\(os error (\d+)\)|(No space left on device)|(Read-only file system)")


def _wrapped_os_error(text: str) -> OSError | None:
    """A file-system failure that a library reported in its own error type (Rust and C extensions do)."""
    found = _OS_ERROR.search(text)
    if found is None:
        return None
    code = int(found.group(1)) if found.group(1) else (28 if found.group(2) else 30)
    return OSError(code, text)


_PATH = re.compile(r"(?<![^\s'\"(=])(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"]+)+[\\/]([^\\/\s'\"]+)")


def _without_paths(text: str) -> str:
    """Keep a file's name, drop the folders it lives in: replies must not map the server's disk."""
    return _PATH.sub(r"\1", text)




_ABSOLUTE = re.compile(r"(?<![^\s'\"(=\[,])((?:[A-Za-z]:)?[\\/][^\s'\"]*[^\s'\".,;:!?)\]])")


def name_paths(text: str, places: Iterable[tuple[str, str]]) -> str:
    """Absolute paths in `text` named by what they are: a known folder by its words ("the job's cache"),
    a file under it as "name in the job's cache", any other path by its last name."""
    known = sorted(((str(root).replace("\\", "/").rstrip("/"), words) for root, words in places),
                   key=lambda place: -len(place[0]))

    def named(match: re.Match) -> str:
        path = match.group(1).replace("\\", "/")
        for root, words in known:
            if path.rstrip("/") == root:
                return words
            if root and path.startswith(root + "/"):
                return f"{path.rstrip('/').rsplit('/', 1)[-1]} in {words}"
        return path.rstrip("/").rsplit("/", 1)[-1] or "a folder"

    return _ABSOLUTE.sub(named, text)


def bounded(text: str, limit: int) -> str:
    """At most `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters)"
