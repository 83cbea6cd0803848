"""A training job survives the app process dying: it is found `interrupted`, resumes from its last
checkpoint, and ends with the same weights as a run that never stopped."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.config import Settings
from lora_studio.studio import Studio
from tests.conftest import noise_image

pytestmark = pytest.mark.slow  # trains in a child process, kills it, resumes

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40


def make_folder(path: Path) -> Path:
    path.mkdir()
    for i in range(4):
        noise_image(i, 64).save(path / f"{i}.png")
        (path / f"{i}.txt").write_text(f"photo of mila_v1, view {i}")
    return path


def train_args(folder: Path, workspace: Path) -> list[str]:
    return ["train", str(folder), "--trigger", "mila_v1", "--name", "mila", "--steps", str(STEPS),
            "--rank", "4", "--learning-rate", "0.001", "--json", "--workspace", str(workspace)]


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    folder = make_folder(tmp_path / "set")
    crashed_ws = tmp_path / "crashed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio", *train_args(folder, crashed_ws)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while not list(crashed_ws.glob("jobs/*/checkpoints/step_*")):
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()

    with Studio(Settings(workspace=crashed_ws)) as studio:
        [job] = studio.jobs.list("train")
        assert job.status == "interrupted"
        studio.jobs.resume(job.id)
        done = studio.wait(job.id, 300)
        assert any("Resum" in line for line in done.logs)
        resumed = load_file(str(studio.library.path(studio.library.resolve("mila"))))

    from lora_studio.cli import main

    assert main(train_args(folder, tmp_path / "straight")) == 0
    with Studio(Settings(workspace=tmp_path / "straight")) as studio:
        straight = load_file(str(studio.library.path(studio.library.resolve("mila"))))
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.allclose(resumed[key], straight[key], atol=1e-6), key
