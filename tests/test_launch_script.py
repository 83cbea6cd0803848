"""start.sh for real, in a fresh clone whose path has a space: the first run makes .venv, installs the
requirements with the constraints and serves the page; the second reuses .venv and serves it
without installing anything. No --system-site-packages: the install is a real one.

The first install takes minutes (the packages come from the registry; torch from this machine's
CPU wheel, as constraints.txt pins it). It is skipped only where pip would download a CUDA build of
torch (gigabytes); `would_download_cuda_torch` asks pip itself, so it never skips on this machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
FIRST_RUN_LIMIT = 1500  # seconds for install + start on a busy 2-core machine
LATER_RUN_LIMIT = 240


def would_download_cuda_torch() -> bool:
    """pip's own answer: does `torch` under constraints.txt resolve to a build that needs CUDA wheels?"""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         "-c", str(ROOT / "constraints.txt"), "torch"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"pip could not resolve torch: {out.stderr[-2000:]}")
    report = json.loads(out.stdout[out.stdout.index("{"):])
    names = [item["metadata"]["name"].lower() for item in report["install"]]
    return any(name.startswith(("nvidia-", "cuda-")) for name in names)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_once(clone: Path, workdir: Path, log: Path, limit: float) -> tuple[float, str, str]:
    """Run start.sh until its page answers; return (seconds, page, output). Always stops the app."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SPACE_ID")}
    # pip's --no-compile (spelled PIP_COMPILE=0; PIP_NO_COMPILE=1 would turn compiling on): byte-compiling
    # every installed package is a third of the install here, and the app compiles what it imports anyway
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PIP_COMPILE="0")
    started = time.monotonic()
    with open(log, "w") as out:
        app = subprocess.Popen(["bash", str(clone / "start.sh"), "--port", str(port), "--no-browser",
                                "--workspace", str(workdir / "workspace")],
                               cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            assert app.poll() is None, f"start.sh ended early:\n{log.read_text()[-4000:]}"
            assert time.monotonic() - started < limit, f"no page after {limit} s:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
                    return time.monotonic() - started, page, log.read_text()
            except OSError:
                time.sleep(0.5)
    finally:
        stop(app)


def stop(app: subprocess.Popen) -> None:
    """The launcher and the app it became share one process group: end all of it."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(app.pid, sig)
        except ProcessLookupError:
            return
        try:
            app.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_start_sh_installs_once_then_starts_without_installing(tmp_path, record_property):
    if would_download_cuda_torch():
        pytest.skip("pip would download a CUDA build of torch here (gigabytes); the first-run install is skipped")
    clone = tmp_path / "LoRA Studio"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    try:
        check_two_runs(clone, workdir, tmp_path, record_property)
    finally:
        shutil.rmtree(clone / ".venv", ignore_errors=True)  # 1.5 GB; pytest keeps its last temp folders


def check_two_runs(clone: Path, workdir: Path, tmp_path: Path, record_property) -> None:
    first, page, output = serve_once(clone, workdir, tmp_path / "first.log", FIRST_RUN_LIMIT)
    assert "Creating the Python environment" in output
    assert "Installing LoRA Studio's packages" in output and "Packages installed." in output
    assert "LoRA Studio" in page
    venv_python = clone / ".venv" / "bin" / "python"
    torch = subprocess.run([str(venv_python), "-c", "import torch, sys; print(torch.__version__, sys.prefix)"],
                           capture_output=True, text=True, check=True).stdout
    assert torch.startswith("2.13.0") and str(clone / ".venv") in torch  # the venv's own torch, as pinned

    second, page, output = serve_once(clone, workdir, tmp_path / "second.log", LATER_RUN_LIMIT)
    assert "no install needed" in output
    assert "Creating" not in output and "Installing" not in output and "Collecting" not in output
    assert "LoRA Studio" in page
    assert second < first
    record_property("first_run_seconds", round(first, 1))
    record_property("second_run_seconds", round(second, 1))
    print(f"\nstart.sh first run (install + start): {first:.0f} s; second run (start only): {second:.1f} s")
