"""`python -m lora_studio models download ID` and Ctrl-C, against the fake Hub: SIGINT stops it with its
bytes kept, one sentence and exit 130; the same command again goes on with that job to the end; a
command killed outright never blocks the next one, nor the app's Download button. The fake Hub's byte
counts show nothing is sent twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.test_hub import OPEN, WEIGHTS, hub, models, needed, received, repo_folders  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def download(workspace, env, **popen):
    return subprocess.Popen([sys.executable, "-m", "lora_studio", "models", "download", OPEN, "--workspace",
                             str(workspace)], cwd=ROOT, env={**os.environ, **env}, text=True, **popen)


def records(workspace) -> list[dict]:
    try:
        return list(json.loads((workspace / "studio.json").read_text(encoding="utf-8"))["jobs"].values())
    except (OSError, ValueError, KeyError):
        return []


def wait_for(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def nothing_sent_twice(hub) -> None:
    for path, count in needed(hub, OPEN).items():
        assert hub.served[(OPEN, path)] == count, path


def test_ctrl_c_stops_a_download_cleanly_and_the_same_command_finishes_it(hub, tmp_path):
    workspace = tmp_path / "ws"
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 2)
    child = download(workspace, hub.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert hold.reached.wait(120)
        received(OPEN, size // 2)
        child.send_signal(signal.SIGINT)
        wait_for(lambda: any(r.get("message") == "Stopping…" for r in records(workspace)))
        hold.released.set()  # the held answer ends: the downloader sees the stop at its next chunk
        out, err = child.communicate(timeout=120)
    finally:
        hold.released.set()
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Stopped {OPEN} at ") and "the bytes are kept; run the same command again" in last, err
    (job,) = records(workspace)
    assert job["status"] == "canceled"
    assert hub.served[(OPEN, WEIGHTS)] == size // 2

    later = hub.hold(OPEN, WEIGHTS, after=size // 4)  # the rest comes in two parts: progress in between
    again = download(workspace, hub.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert later.reached.wait(120)
        received(OPEN, size // 2 + size // 4)
        time.sleep(1.0)  # the command shows the bytes so far (it looks twice a second)
    finally:
        later.released.set()
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "on disk" in out and " MB of " in err  # it waited to the end, showing the bytes
    (job,) = records(workspace)  # the same job went on; no second one
    assert job["status"] == "succeeded"
    assert hub.served[(OPEN, WEIGHTS)] == size
    ranges = [r for _, p, r in hub.requests if p.endswith(WEIGHTS)]
    assert f"bytes={size // 2}-" in ranges and f"bytes={size // 2 + size // 4}-" in ranges
    nothing_sent_twice(hub)


def test_a_command_killed_outright_never_blocks_the_next_one(hub, tmp_path):
    workspace = tmp_path / "ws"
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 3)
    child = download(workspace, hub.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hold.reached.wait(120)
        received(OPEN, size // 3)
        child.send_signal(signal.SIGKILL)  # no chance to say anything: the record stays "running"
        child.wait(30)
    finally:
        hold.released.set()
        if child.poll() is None:
            child.kill()
    assert [r["status"] for r in records(workspace)] == ["running"]
    again = download(workspace, hub.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "already being downloaded" not in err, err
    assert [r["status"] for r in records(workspace)] == ["succeeded"]
    nothing_sent_twice(hub)


def test_the_apps_download_button_takes_over_a_download_whose_command_died(hub, studio, models):  # noqa: F811
    """The app runs; a CLI command on its workspace dies mid-download. The record it left "running" is
    neither a refusal ("already being downloaded") nor a "Stopping…" that never ends."""
    workspace = studio.store.root
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 2)
    child = download(workspace, hub.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hold.reached.wait(120)
        received(OPEN, size // 2)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        hold.released.set()
        if child.poll() is None:
            child.kill()
    (left,) = models.downloads()
    assert left.status == "running" and studio.jobs.orphaned(left.id)
    job = models.start_download(OPEN)  # the page's Download button
    assert job.id == left.id
    assert studio.jobs.wait(job.id, timeout=120).status == "succeeded"
    assert hub.served[(OPEN, WEIGHTS)] == size
    nothing_sent_twice(hub)
