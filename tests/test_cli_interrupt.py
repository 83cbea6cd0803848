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
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT
from tests.test_hub import OPEN, WEIGHTS, hub, needed, received, repo_folders  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def download(workspace, env, **popen):
    return subprocess.Popen([sys.executable, "-m", "lora_studio", "models", "download", OPEN, "--workspace",
                             str(workspace)], cwd=ROOT, env={**os.environ, **env}, text=True, **popen)


@contextmanager
def held(hub, workspace, after: int, on_disk: int | None = None, **popen):
    """The command runs until the Hub has sent `after` bytes of the weights' answer and `on_disk` bytes
    of them are written; the Hub holds the rest until the block ends (then the connection drops)."""
    hold = hub.hold(OPEN, WEIGHTS, after=after)
    child = download(workspace, hub.env, **popen)
    try:
        assert hold.reached.wait(120)
        received(OPEN, on_disk or after)
        yield child, hold
    except BaseException:
        child.kill()
        raise
    finally:
        hold.released.set()


def killed(hub, workspace, after: int) -> None:
    with held(hub, workspace, after, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as (child, _):
        child.send_signal(signal.SIGKILL)  # no chance to say anything: the record stays "running"
        child.wait(30)


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
    with held(hub, workspace, size // 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as (child, hold):
        child.send_signal(signal.SIGINT)
        wait_for(lambda: any(r.get("message") == "Stopping…" for r in records(workspace)))
        hold.released.set()  # the held answer ends: the downloader sees the stop at its next chunk
        out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Stopped {OPEN} at ") and "the bytes are kept; run the same command again" in last, err
    (job,) = records(workspace)
    assert job["status"] == "canceled"
    assert hub.served[(OPEN, WEIGHTS)] == size // 2

    # the rest comes in two parts, so the command shows the bytes so far in between (it looks twice a second)
    with held(hub, workspace, size // 4, size // 2 + size // 4, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE) as (again, _):
        time.sleep(1.0)
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
    killed(hub, workspace, size // 3)
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
    killed(hub, workspace, size // 2)
    (left,) = models.downloads()
    assert left.status == "running" and studio.jobs.orphaned(left.id)
    job = models.start_download(OPEN)  # the page's Download button
    assert job.id == left.id
    assert studio.jobs.wait(job.id, timeout=120).status == "succeeded"
    assert hub.served[(OPEN, WEIGHTS)] == size
    nothing_sent_twice(hub)
