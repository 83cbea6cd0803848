"""A disk that fills up, or was never writable (issue 10, finding 2).

Two ways to fill it: `os.fsync` made to fail with ENOSPC (every atomic write of the store and of the
images goes through it; runs anywhere), and, where this runs as root, a real 8 MB tmpfs filled with
a ballast file. Either way, during a character sheet and during a training: the job fails with a
plain message (once the disk can take it; until then the status waits in memory), the next job
runs, and nothing stored before is lost.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from lora_studio import store as store_module
from lora_studio.config import Settings
from lora_studio.errors import WorkspaceError
from lora_studio.services.generate import GenerateOptions
from lora_studio.services.sheet import SheetOptions
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio
from tests.hostile_kit import dataset_for, snapshot

ROOT = Path(__file__).resolve().parents[1]
DISK_FULL = "The disk is full"


class FullDisk:
    """While `full` is set, every fsync (so every atomic write) fails as a full disk would."""

    def __init__(self, monkeypatch) -> None:
        self.full = threading.Event()
        real = os.fsync

        def fsync(fd):
            if self.full.is_set():
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)

        monkeypatch.setattr(store_module.os, "fsync", fsync)


def wait_for(condition, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def ended(studio, job_id: str) -> bool:
    """The worker is done with the job: its end is in the store, or waiting in memory for the disk."""
    return studio.jobs._idle.is_set() and (job_id in studio.jobs._unrecorded or studio.jobs.get(job_id).done)


def kept(before: dict, after: dict) -> None:
    """Every file and record that existed before the fault is still there, unchanged (a running job's
    own folder grows and rotates checkpoints; its resume is checked instead)."""
    for path, digest in before["files"].items():
        if not path.startswith("jobs/"):
            assert after["files"].get(path) == digest, path
    for table, rows in before["records"].items():
        for key, row in rows.items():
            if table != "jobs":
                assert after["records"][table][key] == row, (table, key)


def sheet_then_generate(studio, disk_full, disk_free, astronaut_path):
    """Fill the disk while a sheet runs; free it; the sheet is failed in words; a generate runs."""
    character = studio.characters.create("Mila")
    studio.characters.add_images(character["id"], [astronaut_path])
    job = studio.sheet.start(character["id"], SheetOptions(gate=False))
    wait_for(lambda: len(studio.store.find("images", kind="sheet")) >= 2)
    saved = {r["id"] for r in studio.store.find("images", kind="sheet")}
    before = snapshot(studio.store.root)  # everything stored up to the moment the disk fills
    disk_full()
    # Its failure may not be writable yet: then it waits in memory, and the worker goes on.
    wait_for(lambda: ended(studio, job.id), timeout=300)
    assert studio.jobs._worker.is_alive()
    disk_free()
    failed = studio.jobs.wait(job.id, 60)
    assert failed.status == "failed" and failed.error.startswith(DISK_FULL), failed.error
    assert str(studio.store.root) not in failed.error
    nxt = studio.generator.start(GenerateOptions(prompt="after the disk was freed", seed=3))
    assert studio.jobs.wait(nxt.id, 300).status == "succeeded"
    kept(before, snapshot(studio.store.root))
    assert saved <= {r["id"] for r in studio.store.find("images", kind="sheet")}
    return job


def training_then_resume(studio, disk_full, disk_free, astronaut_path):
    """Fill the disk mid-training; it fails in words; freed, the same job resumes and finishes."""
    dataset = dataset_for(studio, "Mila", astronaut_path)
    job = studio.training.start(dataset["id"], TrainOptions(name="mila", trigger="mila_v1", preset="Beginner",
                                                            steps=24, rank=4, learning_rate=1e-3,
                                                            checkpoint_every=4, sample_every=24))
    job_dir = studio.store.job_dir(job.id)
    wait_for(lambda: list(job_dir.glob("checkpoints/step_*")))
    before = snapshot(studio.store.root)
    disk_full()
    wait_for(lambda: ended(studio, job.id), timeout=300)
    disk_free()
    failed = studio.jobs.wait(job.id, 60)
    assert failed.status == "failed" and failed.error.startswith(DISK_FULL), failed.error
    kept(before, snapshot(studio.store.root))
    assert studio.library.list() == []
    studio.jobs.resume(job.id)
    done = studio.wait(job.id, 600)
    assert any("Resum" in line for line in done.logs) and done.outputs["lora_name"] == "mila"


@pytest.mark.slow
def test_disk_full_during_a_sheet(tmp_path, monkeypatch, astronaut_path):
    disk = FullDisk(monkeypatch)
    with Studio(Settings(workspace=tmp_path / "ws")) as studio:
        sheet_then_generate(studio, disk.full.set, disk.full.clear, astronaut_path)


@pytest.mark.slow
def test_disk_full_during_a_training(tmp_path, monkeypatch, astronaut_path):
    disk = FullDisk(monkeypatch)
    with Studio(Settings(workspace=tmp_path / "ws")) as studio:
        training_then_resume(studio, disk.full.set, disk.full.clear, astronaut_path)


def test_a_failure_while_recording_a_failure_does_not_stop_the_worker(tmp_path, monkeypatch):
    """The path that used to kill the worker: the job raises, and so does every write after it."""
    from lora_studio.jobs import JobQueue
    from lora_studio.store import Store

    disk = FullDisk(monkeypatch)
    store = Store(tmp_path)
    queue = JobQueue(store)

    def fills_the_disk(params, reporter):
        disk.full.set()
        reporter.progress(0.5, "writing")
        reporter.flush()

    queue.register("fill", fills_the_disk)
    queue.register("ok", lambda params, reporter: {"fine": True})
    queue.start()
    first = queue.submit("fill", {})
    wait_for(lambda: queue._unrecorded.get(first.id))
    assert queue.get(first.id).status == "running"  # the disk refused the news, for now
    disk.full.clear()
    assert queue.wait(first.id, 30).error.startswith(DISK_FULL)
    assert queue.wait(queue.submit("ok", {}).id, 30).outputs == {"fine": True}
    queue.stop()


# ---- a real small file system -------------------------------------------------------------------------
@contextmanager
def tmpfs(path: Path, size: str = "8m"):
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fsync tests above cover the same paths")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Ballast:
    """Fills the file system to the last byte, and frees it again."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "ballast.bin"

    def fill(self) -> None:
        for size in (65536, 4096, 512, 1):  # big blocks first, then whatever is left
            try:
                with open(self.path, "ab", buffering=0) as handle:
                    while True:
                        handle.write(b"\0" * size)
            except OSError:
                continue

    def free(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_real_full_disk_during_a_sheet(tmp_path, astronaut_path):
    with tmpfs(tmp_path / "small") as mount:
        ballast = Ballast(mount)
        with Studio(Settings(workspace=mount / "ws")) as studio:
            sheet_then_generate(studio, ballast.fill, ballast.free, astronaut_path)


@pytest.mark.slow
def test_a_real_full_disk_during_a_training(tmp_path, astronaut_path):
    with tmpfs(tmp_path / "small", size="32m") as mount:
        ballast = Ballast(mount)
        with Studio(Settings(workspace=mount / "ws")) as studio:
            training_then_resume(studio, ballast.fill, ballast.free, astronaut_path)


# ---- a workspace that cannot be used at all ---------------------------------------------------------
def test_a_read_only_workspace_is_refused_at_start_up_in_words(tmp_path):
    with tmpfs(tmp_path / "ro", size="1m") as mount:
        (mount / "ws").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(WorkspaceError, match="read-only disk"):
            Studio(Settings(workspace=mount / "ws"))
        done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--workspace", str(mount / "ws")],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="False"))
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "error: The workspace folder" in done.stderr and "read-only disk" in done.stderr


def test_an_unwritable_workspace_is_refused_in_words_and_a_damaged_database_set_aside(tmp_path, monkeypatch):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "studio.json").write_text("{not json")
    with Studio(Settings(workspace=tmp_path / "bad"), start=False) as studio:  # a damaged database: set aside
        [note] = studio.startup_notes()
        assert "studio.json could not be used (not valid JSON)" in note
        assert (tmp_path / "bad" / studio.moved[0].moved_to).read_text() == "{not json"  # kept as it was

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store_module.tempfile, "mkstemp", denied)
    with pytest.raises(WorkspaceError, match="may not write to its workspace"):
        Studio(Settings(workspace=tmp_path / "denied"))


def test_a_full_disk_reported_in_a_librarys_own_error_type_is_named_in_words():
    """safetensors (Rust) reports ENOSPC as SafetensorError('... No space left on device (os error 28)')."""
    from lora_studio.job_records import describe_error

    class LibraryError(Exception):
        pass

    wrapped = LibraryError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert describe_error(wrapped).startswith("The disk is full")
    assert describe_error(LibraryError("write failed: Read-only file system")).startswith("The workspace is on a read-only")
    assert describe_error(LibraryError("something else")).startswith("Unexpected LibraryError")
