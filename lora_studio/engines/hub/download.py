"""Download a repo's needed files into the Hugging Face cache, keeping every byte already fetched.

huggingface_hub 2.4.0 writes each file to a per-process temporary and deletes it when the download
fails, so a 10 GB shard cut at 9 GB starts again from zero, and a cancel or a restart loses it too.
Here each file grows in `blobs/<etag>.part` beside the cache's own blobs; every attempt asks for the
rest with an HTTP `Range` request (a dropped connection, a cancel, a restart, another day). A finished
file is checked (size, and its sha256 where the etag is one) and placed exactly where
huggingface_hub would put it: `blobs/<etag>`, `snapshots/<commit>/<path>` linking to it, and
`refs/main`. So `from_pretrained(repo_id)` later finds it offline, and online it asks only for
metadata: the etags are the ones the client's own `HEAD` reads.

Bytes are counted as they arrive (not per file), so the page can show MB/s and the time left.

Names from the Hub are checked before they become paths: the listing's file names and commit in
repo.py, each file's ETag here (it names the blob), and every path is checked to stay in the repo's
cache folder before anything is written there.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

from ...progress import Canceled
from ...sizes import byte_text
from ...store import atomic_write_text
from .repo import HubError, RepoFiles, endpoint, free_bytes, hub_error, repo_cache, safe_name, snapshot_dir

CHUNK = 1 << 20
ATTEMPTS = 6  # per file, for dropped connections and timeouts; each resumes where the last stopped
PART = ".part"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ETAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")  # the Hub's are hex (git sha1 or sha256); no dots


def space_text(need: int, free: int) -> str:
    return (f"Not enough free disk space for this download: it needs {byte_text(need)} more and the Hugging Face cache's "
            f"disk has {byte_text(free)} free. Free some space, or point HF_HOME (or HF_HUB_CACHE) at a bigger disk.")


def _part_path(repo_id: str, etag: str) -> Path:
    return repo_cache(repo_id) / "blobs" / f"{etag}{PART}"


def bytes_kept(repo: RepoFiles) -> int:
    """Bytes on disk for this repo's needed files: finished ones plus partial ones (read from the cache,
    so a new process knows where a download stopped)."""
    folder = snapshot_dir(repo.repo_id, repo.commit)
    blobs = repo_cache(repo.repo_id) / "blobs"
    done = sum(f.size for f in repo.files if (folder / f.path).is_file())
    partial = sum(p.stat().st_size for p in blobs.glob(f"*{PART}")) if blobs.is_dir() else 0
    return done + partial


def fetch(repo: RepoFiles, token: str | None, on_bytes: Callable[[int], None],
          cancelled: Callable[[], bool], free: Callable[[Path], int] = free_bytes, ref: bool = True) -> Path:
    """Fetch what the cache lacks of `repo`; returns the snapshot folder. Raises Canceled or HubError.
    `ref`: point `refs/main` at this commit (not for the index a listing reads)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    snapshot = snapshot_dir(repo.repo_id, repo.commit)
    for item in repo.files:
        if not safe_name(item.path):
            raise HubError(f"{item.path!r} is not a file name inside {repo.repo_id}; nothing was written.")
        target = _inside(snapshot / item.path, snapshot, repo.repo_id)
        if target.is_file():
            continue
        if cancelled():
            raise Canceled("Canceled by the user; the bytes fetched so far are kept.")
        url = hf_hub_url(repo.repo_id, item.path, revision=repo.commit, endpoint=endpoint())
        try:
            meta = get_hf_file_metadata(url, token=token or None, retry_on_errors=True)
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, repo.repo_id) from None
        size = meta.size if meta.size is not None else item.size
        etag = _checked_etag(meta.etag, item.path, repo.repo_id)
        blob = repo_cache(repo.repo_id) / "blobs" / etag
        if not (blob.is_file() and blob.stat().st_size == size):
            part = _part_path(repo.repo_id, etag)
            part.parent.mkdir(parents=True, exist_ok=True)
            have = part.stat().st_size if part.exists() else 0
            if size - have > free(part.parent):
                raise HubError(space_text(size - have, free(part.parent)))
            _fetch_file(url, part, size, token, on_bytes, cancelled, repo.repo_id)
            _check(part, size, etag, item.path)
            os.replace(part, blob)
        _link(blob, target)
    if ref:
        main = repo_cache(repo.repo_id) / "refs" / "main"
        main.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(main, repo.commit)
    return snapshot


def _checked_etag(etag, name: str, repo_id: str) -> str:
    """The ETag names the blob file: only a plain token (no '/', no '.') may."""
    if not isinstance(etag, str) or not _ETAG.fullmatch(etag):
        shown = repr(etag) if len(repr(etag)) <= 80 else repr(etag)[:77] + "…"
        raise HubError(f"The Hub's answer for {name} in {repo_id} gave {shown} as the file's id (ETag), which "
                       "cannot name a file in the cache. If HF_ENDPOINT points at a mirror, check it; nothing "
                       "was written.")
    return etag


def _inside(path: Path, folder: Path, repo_id: str) -> Path:
    """`path` if its folder stays in `folder` once '..' and links are resolved (the last check before a
    write; the file itself is a link into blobs/ once fetched)."""
    resolved, root = Path(os.path.realpath(path.parent)), Path(os.path.realpath(folder))
    if resolved != root and root not in resolved.parents:
        raise HubError(f"A file of {repo_id} would be written outside its cache folder; nothing was written.")
    return path


def _fetch_file(url: str, part: Path, size: int, token: str | None, on_bytes: Callable[[int], None],
                cancelled: Callable[[], bool], repo_id: str) -> None:
    import httpx2  # huggingface_hub's HTTP client: its session carries the proxies and the offline switch
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    failures = 0
    client, timeout = get_session(), httpx2.Timeout(30.0, connect=10.0)
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # not this file (a damaged partial): start it again
            part.unlink()
            have = 0
        if have == size:
            return
        headers = build_hf_headers(token=token or None)
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with client.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
                if response.status_code == 416:
                    part.unlink(missing_ok=True)
                    continue
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                mode = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if response.status_code == 206 else os.O_TRUNC)
                fd = os.open(part, mode | getattr(os, "O_BINARY", 0), 0o644)
                try:  # unbuffered: what was received is on disk even if the process dies next
                    for data in response.iter_bytes():  # as it arrives: nothing held back in memory
                        os.write(fd, data)
                        on_bytes(len(data))
                        if cancelled():
                            raise Canceled("Canceled by the user; the bytes fetched so far are kept.")
                finally:
                    os.close(fd)
            if part.stat().st_size >= size:
                return
            raise httpx2.RemoteProtocolError("the answer ended before the file did")
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            if cancelled():
                raise Canceled("Canceled by the user; the bytes fetched so far are kept.") from None
            failures += 1
            if failures >= ATTEMPTS:
                raise HubError(f"The connection to the Hub kept dropping ({type(exc).__name__}). Start the "
                               "download again: the bytes fetched so far are kept.") from None
            time.sleep(min(0.25 * 2 ** failures, 8.0))
        except (Canceled, HubError):
            raise
        except Exception as exc:  # noqa: BLE001 - an HTTP refusal in words
            raise hub_error(exc, repo_id) from None


def _check(part: Path, size: int, etag: str, name: str) -> None:
    """A finished file must have its size and, where the etag is a sha256 (weights), that hash."""
    if part.stat().st_size != size:
        part.unlink(missing_ok=True)
        raise HubError(f"{name} arrived with the wrong size; start the download again.")
    if _SHA256.fullmatch(etag):
        digest = hashlib.sha256()
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK * 8), b""):
                digest.update(block)
        if digest.hexdigest() != etag:
            part.unlink(missing_ok=True)
            raise HubError(f"{name} arrived damaged (its checksum differs); start the download again.")


def _link(blob: Path, target: Path) -> None:
    """snapshots/<commit>/<path> → ../../blobs/<etag>, as huggingface_hub links it (a copy where the
    system allows no symlinks, as on Windows without developer mode)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".link")
    temporary.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(blob, target.parent), temporary)
    except OSError:
        shutil.copyfile(blob, temporary)
    os.replace(temporary, target)
