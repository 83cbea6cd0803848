"""Records in TinyDB and files under the workspace, both written atomically.

TinyDB rewrites its whole JSON file on every change; `AtomicJSONStorage` writes to a temp file
and `os.replace`s it, so a kill mid-write leaves the previous file intact. One re-entrant lock
serialises every table operation: the job worker and Gradio's request threads share the store.
File names are generated here, never taken from user input.

Records and API replies hold workspace-relative paths (`relative`), never absolute ones; `path`
turns them back and refuses anything that would leave the workspace. Only `SERVED` folders hold
files a browser may fetch (images the UI shows); the database, job logs, datasets and LoRA files
live beside them and are never served.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from .errors import NotFound, WorkspaceError, describe_os_error

TABLES = ("characters", "images", "datasets", "jobs", "loras")
_RECORD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as new_id makes them (and services/limits.record_id reads)
SERVED = ("characters", "public")  # images the UI shows; nothing else in the workspace is served
PRIVATE = ("studio.json", "tasks.json", "jobs", "datasets", "loras", "exports", "replicate", "scores")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy a file in chunks (a LoRA may be a gigabyte) and move it into place in one step."""
    def fill(handle) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle, 1024 * 1024)

    _atomic(path, fill)


def _atomic(path: Path, fill: Callable[[Any], Any]) -> None:
    """Write through a temp file beside `path`, synced, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str))


@dataclass(frozen=True)
class MovedAside:
    """A settings file that could not be read or served at start-up, kept under another name."""

    name: str
    moved_to: str
    why: str

    def sentence(self) -> str:
        return (f"{self.name} could not be used ({self.why}); it was moved aside to {self.moved_to} and the "
                "defaults are used. Fix and rename it back, or delete it.")


def recover_json(path: Path, check: Callable[[Any], None] | None = None) -> MovedAside | None:
    """Read a settings file as JSON whose every string can be served back, then `check` it (raising
    on anything wrong); a file that fails is renamed with a timestamp so the next start is clean.
    Nothing a visitor once stored can then stop the app from starting."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return set_aside(path, "not readable as UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc))
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return set_aside(path, "not valid JSON")
    if not servable(value):
        return set_aside(path, "it holds text that is not valid Unicode")
    try:
        if check is not None:
            check(value)
    except Exception as exc:  # noqa: BLE001 - any failure of the file's own rules sets it aside
        return set_aside(path, str(exc) or type(exc).__name__)
    return None


def servable(value: Any) -> bool:
    """Every string valid Unicode (a lone surrogate from a JSON escape cannot be written as UTF-8)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(servable(k) and servable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(servable(v) for v in value)
    return True


def set_aside(path: Path, why: str) -> MovedAside:
    """Rename a file that cannot be used to `<stem>.broken-<time><suffix>` beside it, and say so."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.broken-{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.stem}.broken-{stamp}-{counter}{path.suffix}")
    os.replace(path, target)
    plain = "".join(ch for ch in why if ch.isprintable() and ch not in "<>[]`*_#|\\")[:200]  # shown as Markdown
    moved = MovedAside(path.name, target.name, plain)
    logging.getLogger("lora_studio").warning(moved.sentence())
    return moved


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:12]


class AtomicJSONStorage(Storage):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise WorkspaceError(
                f"The database {self.path.name} is damaged (not valid JSON) and was left as it is. Restore "
                "it from a backup, or move it away to start with an empty workspace.") from None

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, default=str))

    def close(self) -> None:
        pass


class Store:
    """The workspace: `studio.json` plus folders for characters, datasets, LoRAs and jobs."""

    served_folders, private_names = SERVED, PRIVATE

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        _check_writable(self.root)
        self._lock = threading.RLock()
        # A database that cannot be parsed or served is set aside (kept, renamed) so the app still starts.
        self.moved: list[MovedAside] = [m for m in [recover_json(self.root / "studio.json", _tables)] if m]
        self._db = TinyDB(str(self.root / "studio.json"), storage=AtomicJSONStorage)
        self._db.tables()  # read once now: a damaged database is reported at start-up, in words
        self.moved += self._set_aside_records()

    def _set_aside_records(self) -> list[MovedAside]:
        """Records whose id cannot name them (a number, none at all) break every look-up by id, a restart's
        recovery included: they leave the database for a file beside it, and the start goes on."""
        bad = {}
        for name in self._db.tables():
            docs = [d for d in self._db.table(name).all()
                    if not (isinstance(d.get("id"), str) and _RECORD_ID.fullmatch(d["id"]))]
            if docs:
                bad[name] = docs
        if not bad:
            return []
        target = self.root / f"studio.set-aside-{time.strftime('%Y%m%d-%H%M%S')}-{new_id()}.json"
        atomic_write_json(target, {name: [dict(d) for d in docs] for name, docs in bad.items()})  # kept first
        for name, docs in bad.items():
            self._db.table(name).remove(doc_ids=[d.doc_id for d in docs])
        count = sum(len(docs) for docs in bad.values())
        moved = MovedAside(f"{count} record{'s' if count > 1 else ''} of studio.json", target.name,
                           "no usable id")
        logging.getLogger("lora_studio").warning(moved.sentence())
        return [moved]

    # ---- records -------------------------------------------------------------------------
    def insert(self, table: str, record: dict) -> dict:
        record = dict(record)
        record.setdefault("id", new_id())
        record.setdefault("created", time.time())
        with self._lock:
            self._db.table(table).insert(record)
        return record

    def get(self, table: str, record_id: str) -> dict | None:
        with self._lock:
            found = self._db.table(table).get(Query().id == record_id)
        return dict(found) if found else None

    def require(self, table: str, record_id: str) -> dict:
        record = self.get(table, record_id)
        if record is None:
            raise NotFound(f"No {table[:-1]} with id {record_id!r}.")
        return record

    def update(self, table: str, record_id: str, **fields: Any) -> dict:
        with self._lock:
            self._db.table(table).update(fields, Query().id == record_id)
            return self.require(table, record_id)

    def mutate(self, table: str, record_id: str, change: Callable[[dict], None]) -> dict:
        """Read-modify-write one record under the lock (e.g. append to a list)."""
        with self._lock:
            record = self.require(table, record_id)
            change(record)
            self._db.table(table).update(record, Query().id == record_id)
            return record

    def find(self, table: str, **equals: Any) -> list[dict]:
        with self._lock:
            rows = self._db.table(table).all()
        out = [dict(r) for r in rows if all(r.get(k) == v for k, v in equals.items())]
        return sorted(out, key=_created)

    def delete(self, table: str, record_ids: Iterable[str]) -> None:
        ids = set(record_ids)
        with self._lock:
            self._db.table(table).remove(Query().id.one_of(list(ids)))

    # ---- folders -------------------------------------------------------------------------
    def folder(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def character_dir(self, character_id: str, sub: str) -> Path:
        return self.folder("characters", character_id, sub)

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.folder("datasets", dataset_id)

    def lora_dir(self, slug: str) -> Path:
        return self.folder("loras", slug)

    def job_dir(self, job_id: str) -> Path:
        return self.folder("jobs", job_id)

    def public_dir(self, *parts: str) -> Path:
        """A served folder for images the UI shows (a sweep's grid, a generated image, samples)."""
        return self.folder("public", *parts)

    # ---- paths ---------------------------------------------------------------------------
    def relative(self, value: Any) -> Any:
        """`value` with every absolute path inside the workspace made workspace-relative (recursively)."""
        if isinstance(value, dict):
            return {k: self.relative(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.relative(v) for v in value]
        if isinstance(value, (str, Path)) and os.path.isabs(value):
            try:
                return Path(value).resolve().relative_to(self.root).as_posix()
            except (ValueError, OSError):
                return value
        return value

    def path(self, relative: str | Path) -> Path:
        """The absolute path of a workspace-relative one; refuses anything outside the workspace."""
        candidate = (self.root / str(relative)).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise NotFound("That file is not part of the workspace.")
        return candidate

    def served(self, relative: str | Path | None) -> Path | None:
        """An existing file in a served folder (see SERVED), or None: the UI shows nothing else."""
        if not relative:
            return None
        try:
            path = self.path(self.relative(str(relative)))
        except NotFound:
            return None
        top = path.relative_to(self.root).parts[:1]
        return path if top and top[0] in SERVED and path.is_file() else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _tables(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise ValueError("not a TinyDB database")


def _created(record: dict) -> float:
    """Sort key that a damaged record (a text or missing `created`) cannot break."""
    value = record.get("created", 0)
    return float(value) if isinstance(value, (int, float)) and value == value else 0.0


def _check_writable(root: Path) -> None:
    """Fail at start-up, in words, when the workspace cannot hold our files."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-check-{os.getpid()}"
        atomic_write_bytes(probe, b"ok")
        probe.unlink()
    except OSError as exc:
        raise WorkspaceError(f"The workspace folder {root} cannot be used: {describe_os_error(exc)}") from None
