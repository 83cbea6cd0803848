"""Records in TinyDB and files under the workspace, both written atomically.

TinyDB rewrites its whole JSON file on every change; `AtomicJSONStorage` writes to a temp file
and `os.replace`s it, so a kill mid-write leaves the previous file intact. One re-entrant lock
serialises every table operation: the job worker and Gradio's request threads share the store.
File names are generated here, never taken from user input.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from .errors import NotFound

TABLES = ("characters", "images", "datasets", "jobs", "loras")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
        return json.loads(text)

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, default=str))

    def close(self) -> None:
        pass


class Store:
    """The workspace: `studio.json` plus folders for characters, datasets, LoRAs and jobs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = TinyDB(str(self.root / "studio.json"), storage=AtomicJSONStorage)

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
        return sorted(out, key=lambda r: r.get("created", 0))

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

    def close(self) -> None:
        with self._lock:
            self._db.close()
