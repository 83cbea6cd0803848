"""Which files a browser may fetch, how downloads leave, and what happens to uploads.

Gradio serves `/gradio_api/file=<absolute path>` for files under `allowed_paths`, its own upload and
cache folders, and nothing else; a file a handler returns is first copied into its cache, which
works only from `allowed_paths`, the working directory or the temp directory, and never from
`blocked_paths` (checked in gradio 6.31's route_utils.file_fetch and processing_utils._check_allowed).
So:
- allowed: the shipped assets and the workspace's served folders (`characters/`, `public/`), which
  hold only the images the UI shows;
- blocked: the database, jobs (logs, checkpoints), datasets, LoRA files, exports, caches;
- a download the user asks for (a LoRA zip, a dataset zip) is copied into a private temp folder
  and handed to a File output, so Gradio serves its own cached copy for that one reply;
- uploads are deleted from Gradio's upload folder as soon as they are read, kept or refused.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..services.library import MAX_IMPORT_BYTES
from ..studio import Studio

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CACHE_CLEANUP = (1800, 3600)  # every 30 min, delete Gradio's cached/uploaded files older than 1 h

_downloads: Path | None = None
_downloads_lock = threading.Lock()


def launch_paths(studio: Studio) -> dict:
    """The `launch()` arguments that decide what is served and how big an upload may be."""
    store = studio.store
    served = [store.folder(name) for name in store.served_folders]
    return dict(allowed_paths=[str(ASSETS), *map(str, served)],
                blocked_paths=[str(store.root / name) for name in store.private_names],
                max_file_size=MAX_IMPORT_BYTES)  # the largest thing anyone uploads is a LoRA


def shown(studio: Studio, value):
    """Workspace-relative path(s) → absolute paths Gradio may show; anything not served is dropped.

    Takes a path, a list of paths or a list of (path, caption) pairs, as galleries do.
    """
    if isinstance(value, list):
        return [item for item in (shown(studio, v) for v in value) if item]
    if isinstance(value, tuple):
        path = studio.store.served(value[0])
        return (str(path), value[1]) if path else None
    path = studio.store.served(value) if value else None
    return str(path) if path else None


def deliver(path: Path, name: str) -> str:
    """A copy of a private file (an export zip) for one download; same name, same slot: bounded."""
    global _downloads
    with _downloads_lock:
        if _downloads is None or not _downloads.is_dir():
            _downloads = Path(tempfile.mkdtemp(prefix="lora-studio-downloads-"))
        target = _downloads / name
        tmp = target.with_name(f".{name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    return str(target)


def discard_uploads(paths: list[str]) -> None:
    """Delete uploaded files (and their folder) from Gradio's upload folder; never anything else."""
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    for raw in paths:
        try:
            path = Path(raw).resolve()
        except (OSError, RuntimeError):
            continue
        if folder not in path.parents:
            continue  # the sample images, a CLI path: not ours to delete
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # uploads live in a folder named after their hash
        except OSError:
            pass
