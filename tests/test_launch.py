"""Launching: when the browser opens, and what start.sh decides (make .venv, install once, retry a
failed install, pass arguments on), checked with a stand-in Python in .venv so no install runs here.
tests/test_launch_script.py runs the real install in a fresh clone."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_launch():
    spec = importlib.util.spec_from_file_location("launch_module", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = load_launch()
DESKTOP = {"DISPLAY": ":0"}


@pytest.mark.parametrize("host, share, flag, env, platform, opens", [
    ("127.0.0.1", False, False, DESKTOP, "linux", True),  # double-clicked on a desktop
    ("localhost", False, False, {}, "darwin", True),
    ("127.0.0.1", False, False, {}, "win32", True),
    ("127.0.0.1", False, True, DESKTOP, "linux", False),  # --no-browser
    ("127.0.0.1", False, False, {**DESKTOP, "LORA_STUDIO_NO_BROWSER": "1"}, "linux", False),
    ("0.0.0.0", False, False, DESKTOP, "linux", False),  # a server for other machines
    ("0.0.0.0", False, False, {**DESKTOP, "SPACE_ID": "me/lora-studio"}, "linux", False),  # a Space
    ("127.0.0.1", False, False, {**DESKTOP, "SPACE_ID": "me/lora-studio"}, "linux", False),
    ("127.0.0.1", True, False, DESKTOP, "linux", False),  # --share: a link for others
    ("127.0.0.1", False, False, {}, "linux", False),  # no display: SSH or a headless server
    ("127.0.0.1", False, False, {"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
])
def test_browser_opens_only_on_a_local_launch(host, share, flag, env, platform, opens):
    decision, why = launch.browser_decision(host, share, flag, env=env, platform=platform)
    assert decision is opens and why


def test_the_no_browser_flag_parses():
    assert launch.parse_args(["--no-browser"]).no_browser is True
    assert launch.parse_args([]).no_browser is False


# ---- start.sh with a stand-in Python ------------------------------------------------------------
STAND_IN = """#!/usr/bin/env bash
# Stand-in for .venv/bin/python: records each call; pip install answers with $STUB_PIP_RC.
echo "python $*" >> "$STUB_LOG"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  if [ "$3" = "install" ]; then echo "Collecting tinydb (from -r requirements.txt)"; echo "ERROR: stub says $STUB_PIP_RC"; exit "${STUB_PIP_RC:-0}"; fi
  exit 0
fi
case "$1" in
  -c|-) exec "$REAL_PYTHON" "$@" ;;
  *) shift; printf '%s\\n' "$@" > "$STUB_ARGS"; echo "launch.py ran in $(pwd)"; exit 0 ;;
esac
"""


@pytest.fixture
def app_dir(tmp_path) -> Path:
    """start.sh and the requirement files in a folder whose path has spaces, with a stand-in .venv."""
    folder = tmp_path / "My Apps" / "LoRA Studio"
    folder.mkdir(parents=True)
    for name in ("start.sh", "requirements.txt", "constraints.txt"):
        shutil.copy(ROOT / name, folder / name)
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return folder


def start(folder: Path, *args: str, pip_rc: int = 0, path: str | None = None) -> subprocess.CompletedProcess:
    """Run start.sh from another folder, as a double-click or a terminal elsewhere would."""
    env = dict(os.environ, STUB_LOG=str(folder / "calls.log"), STUB_ARGS=str(folder / "args.txt"),
               STUB_PIP_RC=str(pip_rc), REAL_PYTHON=sys.executable)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["/bin/bash", str(folder / "start.sh"), *args], cwd=folder.parent.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def pip_installs(folder: Path) -> int:
    log = folder / "calls.log"
    return log.read_text().count("-m pip install") if log.exists() else 0


def test_first_run_installs_then_later_runs_do_not(app_dir):
    first = start(app_dir, "--port", "7999", "--workspace", "/tmp/a folder/ws")
    assert first.returncode == 0, first.stderr
    assert "Installing LoRA Studio's packages" in first.stdout and "Packages installed." in first.stdout
    assert pip_installs(app_dir) == 1
    assert "-r requirements.txt -c constraints.txt" in (app_dir / "calls.log").read_text()
    assert (app_dir / ".venv" / ".lora-studio-installed").read_text().strip()
    # launch.py got the arguments as given (one has a space), and ran in the launcher's folder.
    assert (app_dir / "args.txt").read_text().splitlines() == ["--port", "7999", "--workspace", "/tmp/a folder/ws"]
    assert f"launch.py ran in {app_dir}" in first.stdout

    second = start(app_dir)
    assert second.returncode == 0 and "no install needed" in second.stdout
    assert pip_installs(app_dir) == 1  # the venv was reused as it was

    with open(app_dir / "requirements.txt", "a") as handle:
        handle.write("rich>=13\n")  # a new requirement: the recorded install no longer matches
    third = start(app_dir)
    assert third.returncode == 0 and "Installing" in third.stdout
    assert pip_installs(app_dir) == 2


def test_a_failed_install_says_why_and_is_retried_next_time(app_dir):
    failed = start(app_dir, pip_rc=1)
    assert failed.returncode == 1
    assert "The install did not finish" in failed.stderr
    assert "ERROR: stub says 1" in failed.stderr  # the tail of the pip log
    assert "run\nthis again" in failed.stderr or "run this again" in failed.stderr.replace("\n", " ")
    assert not (app_dir / ".venv" / ".lora-studio-installed").exists()
    assert (app_dir / ".venv" / "bin" / "python").exists()  # kept, so the next run retries in it
    assert not (app_dir / "args.txt").exists()  # the app did not start on a half-installed venv

    interrupted = start(app_dir, pip_rc=130)  # Ctrl-C in the middle of pip
    assert interrupted.returncode == 1 and not (app_dir / ".venv" / ".lora-studio-installed").exists()

    retried = start(app_dir)
    assert retried.returncode == 0 and "Packages installed." in retried.stdout
    assert pip_installs(app_dir) == 3


def tools_only_path(folder: Path, python_version: str | None) -> str:
    """A PATH with the shell tools start.sh uses and, optionally, a python3 of the given version."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat", "rm", "mv", "tee", "grep", "tail", "uname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if python_version:
        fake = bin_dir / "python3"
        fake.write_text(f"#!/bin/bash\n[ \"$1\" = --version ] && echo 'Python {python_version}'\nexit 1\n")
        fake.chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize("version, message", [
    (None, "No Python 3 was found"),
    ("3.8.10", "Found Python 3.8.10"),
])
def test_no_usable_python_says_how_to_get_one(tmp_path, version, message):
    folder = tmp_path / "app"
    folder.mkdir()
    for name in ("start.sh", "requirements.txt", "constraints.txt"):
        shutil.copy(ROOT / name, folder / name)
    env = {"PATH": tools_only_path(tmp_path, version), "HOME": str(tmp_path)}
    out = subprocess.run(["/bin/bash", str(folder / "start.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert message in out.stderr and "3.10 or newer" in out.stderr
    assert "apt install python3" in out.stderr
    assert not (folder / ".venv").exists()


def test_launchers_are_executable_scripts_that_run_from_their_own_folder():
    for name in ("start.sh", "start.command"):
        path = ROOT / name
        assert os.access(path, os.X_OK), f"{name} must keep its executable bit"
        assert path.read_text().startswith("#!/usr/bin/env bash")
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert 'cd "$(dirname "$0")"' in (ROOT / "start.command").read_text()
    bat = (ROOT / "start.bat").read_bytes()
    assert b"\r\n" in bat and b"\n" not in bat.replace(b"\r\n", b"")  # cmd.exe needs CRLF lines
    text = bat.decode()
    for needed in ('cd /d "%~dp0"', "-r requirements.txt -c constraints.txt", "launch.py\" %*",
                   ".lora-studio-installed", "nvidia-smi"):
        assert needed in text, needed


LAUNCH_PROBE = """
import json, sys, gradio
def launch(self, **kwargs):
    print(json.dumps({k: kwargs.get(k) for k in ("inbrowser", "server_name", "server_port")}))
gradio.Blocks.launch = launch
sys.path.insert(0, sys.argv[1])
import launch as app
app.main(sys.argv[2:])
"""


@pytest.mark.slow  # a Python process that builds the app
@pytest.mark.parametrize("args, env, inbrowser", [
    ([], DESKTOP, True),
    (["--no-browser"], DESKTOP, False),
])
def test_launch_passes_the_decision_to_gradio(tmp_path, args, env, inbrowser):
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SPACE_ID")}
    out = subprocess.run([sys.executable, "-c", LAUNCH_PROBE, str(ROOT), "--workspace", str(tmp_path / "ws"),
                          "--port", "7990", *args], env={**clean, **env}, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    launched = json.loads(out.stdout.strip().splitlines()[-1])
    assert launched["inbrowser"] is inbrowser and launched["server_port"] == 7990
    assert ("Browser: opening the app" in out.stdout) is inbrowser


RACE = """
import threading
from lora_studio.config import Settings
from lora_studio.engines import make_engine, memory
from lora_studio.engines.base import GenerateRequest

errors, go = [], threading.Barrier(2)

def guard(fn):
    def run():
        go.wait()
        try:
            fn()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    return run

plan = guard(lambda: memory.describe_plans("auto", 512, 16, False, None))
first_job = guard(lambda: make_engine(Settings(engine="tiny")).generate(GenerateRequest("a cat", width=64, height=64, steps=2)))
threads = [threading.Thread(target=plan), threading.Thread(target=first_job)]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
"""


@pytest.mark.slow  # a fresh Python process
def test_the_first_job_does_not_race_the_launch_warm_up_for_diffusers():
    # launch.py computes the memory plan in a thread while the first job builds the engine; both are
    # the process's first import of diffusers, which once failed the job ("cannot import name …").
    done = subprocess.run([sys.executable, "-c", RACE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "errors: []", done.stdout[-2000:]
