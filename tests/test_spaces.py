"""ZeroGPU Spaces: GPU work goes through `spaces.GPU` with a duration that fits it; without `spaces`
nothing changes; a training split into GPU calls ends on the same weights as one run."""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lora_studio import gpu_calls
from lora_studio.engines.base import EditRequest, GenerateRequest, TrainRequest
from lora_studio.progress import NullReporter
from tests.conftest import noise_image

ROOT = Path(__file__).resolve().parents[1]


def probe(mode: str) -> dict:
    """tests/zero_gpu_probe.py in a fresh interpreter (`spaces` reads its mode when imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACES_")}
    out = subprocess.run([sys.executable, "-m", "tests.zero_gpu_probe", mode], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # `spaces` prints debug lines before it


def test_without_spaces_the_gpu_entry_points_are_plain_and_engines_unchanged():
    result = probe("absent")
    assert [(e["name"], e["via_spaces"], e["zero_gpu"]) for e in result["report"]] == [
        ("engine_call", False, False), ("train_chunk", False, False)]
    assert result["active"] is False and result["wrapped"] is False
    assert result["note_tiny"] == ""
    assert result["edit"]["pid"] == result["parent_pid"]  # ran in this process, as before
    assert result["scheduled"] == []


def test_on_zero_gpu_every_gpu_call_runs_in_a_spaces_worker_with_its_duration():
    result = probe("zerogpu")
    assert [(e["name"], e["via_spaces"], e["zero_gpu"], e["duration"]) for e in result["report"]] == [
        ("engine_call", True, True, "engine_call_seconds"),
        ("train_chunk", True, True, "train_chunk_seconds")]
    assert result["spaces_wrappers"] == {"engine_call": True, "train_chunk": True}
    assert result["active"] and result["wrapped"]
    # Image calls ran in the forked ZeroGPU worker and came back pickled; other calls stayed here.
    assert result["edit"] == {"pid": result["edit"]["pid"], "prompt": "smiling", "size": [16, 16]}
    assert result["edit"]["pid"] != result["parent_pid"]
    assert result["generate"]["pid"] != result["parent_pid"]
    assert result["describe"].endswith(str(result["parent_pid"]))
    # The worker's error reaches the user with its own message, not "ZeroGPU worker error".
    assert result["error"] == "The LoRA file for 'mila' is missing: lora.safetensors."
    # The device API was asked for each call's own duration: an edit, a generation, a failed edit,
    # then one training chunk (which cannot train here without torch; see the forked test below).
    edit, generate, chunk = result["expected"]
    assert result["scheduled"] == [edit, generate, 71, chunk]
    assert generate < edit <= gpu_calls.MAX_CALL_SECONDS
    assert 1 <= result["train_chunk_steps"] < 1000 and chunk <= gpu_calls.TRAIN_CALL_SECONDS
    assert "ModuleNotFoundError" in result["train_error"]
    assert "ZeroGPU" in result["note_tiny"] and result["note_replicate"] == ""


def test_installed_spaces_is_a_no_op_off_zero_gpu(monkeypatch):
    pytest.importorskip("spaces")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    entries = gpu_calls.build_entry_points()
    assert all(e.via_spaces and e.function is e.plain and not e.zero_gpu for e in entries.values())
    engine = object()
    assert gpu_calls.for_engine(engine) is engine and gpu_calls.banner_note("local") == ""


def test_durations_fit_the_job():
    kontext = EditRequest(image=noise_image(), prompt="p", width=1024, height=1024, steps=28)
    assert gpu_calls.engine_call_seconds("k", "edit", (kontext,), {}) > gpu_calls.engine_call_seconds(
        "k", "edit", (replace(kontext, width=512, height=512),), {})
    small = GenerateRequest(prompt="p", width=512, height=512, steps=20)
    batch = gpu_calls.engine_call_seconds("k", "generate_many", ([small] * 3,), {})
    assert batch > gpu_calls.engine_call_seconds("k", "generate", (small,), {})  # a batch counts each image
    assert gpu_calls.engine_call_seconds("k", "edit", ([kontext] * 20,), {}) == gpu_calls.MAX_CALL_SECONDS
    train = TrainRequest(dataset_dir=Path("d"), output_dir=Path("o"), work_dir=Path("w"), trigger="t",
                         steps=2000, resolution=512, sample_every=250)
    big = replace(train, resolution=1024)
    assert gpu_calls.chunk_steps(big) < gpu_calls.chunk_steps(train) < train.steps
    for request in (train, big):
        chunk = replace(request, stop_after=gpu_calls.chunk_steps(request))
        assert gpu_calls.train_chunk_seconds("k", chunk, None) <= gpu_calls.TRAIN_CALL_SECONDS


# ---- the tiny Flux in forked workers, as ZeroGPU runs it ----------------------------------------
FORK = multiprocessing.get_context("fork")


def _in_child(writer, fn, payload: bytes) -> None:
    torch.set_num_threads(1)  # CPU torch's OpenMP pool does not survive fork (ZeroGPU's work is on CUDA)
    args, kwargs = pickle.loads(payload)
    writer.send_bytes(pickle.dumps(fn(*args, **kwargs)))


class ForkedCalls:
    """Like spaces.GPU on ZeroGPU: each call runs in a forked process, arguments and result pickled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, fn, duration):
        def call(*args, **kwargs):
            self.calls.append((fn.__name__, duration(*args, **kwargs)))
            reader, writer = FORK.Pipe(duplex=False)
            process = FORK.Process(target=_in_child, args=(writer, fn, pickle.dumps((args, kwargs))))
            process.start()
            writer.close()
            assert reader.poll(240), f"{fn.__name__} did not answer"
            result = pickle.loads(reader.recv_bytes())
            process.join(30)
            return result
        return call




def make_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(3):
        noise_image(i, 64).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"photo of ohwx, view {i}")
    return folder


@pytest.mark.slow  # forked worker processes
def test_chunked_training_in_forked_workers_equals_one_run(tmp_path, one_torch_thread, monkeypatch):
    from lora_studio.engines.local.engine import make_local_engine
    from lora_studio.training.trainer import train_on_manager

    engine = make_local_engine(None, None, "cpu", "auto")
    gpu = gpu_calls.GpuEngine(engine)
    gpu_calls.preload(gpu)  # the base lives in the parent; every worker starts from it
    forked = ForkedCalls()
    monkeypatch.setattr(gpu_calls, "_entry_points", gpu_calls.build_entry_points(decorate=forked))

    edit = EditRequest(image=noise_image(3, 64), prompt="smiling", seed=5, width=64, height=64, steps=2)
    assert np.array_equal(np.asarray(gpu.edit(edit)), np.asarray(engine.edit(edit)))
    assert forked.calls == [("engine_call", gpu_calls.engine_call_seconds("k", "edit", (edit,), {}))]

    data = make_dataset(tmp_path / "data")
    request = TrainRequest(dataset_dir=data, output_dir=tmp_path / "chunked" / "out",
                           work_dir=tmp_path / "chunked" / "work", trigger="ohwx", steps=8, rank=4, alpha=8.0,
                           learning_rate=1e-3, resolution=64, checkpoint_every=0, sample_every=4)
    reporter = NullReporter()
    chunked = gpu_calls.train_in_chunks(gpu.key, request, reporter, None, steps_per_call=3)
    assert [name for name, _ in forked.calls[1:]] == ["train_chunk"] * 3  # steps 1-3, 4-6, 7-8
    assert [step for step, _ in reporter.metrics["loss"]] == list(range(1, 9))  # replayed, once each
    assert sum("step 3/8 checkpointed" in line for line in reporter.logs) == 1
    assert sum("Resumed from step_000006" in line for line in reporter.logs) == 1
    assert sorted(p.name for p in (request.work_dir / "samples").iterdir()) == ["step_000004.png",
                                                                               "step_000008.png"]
    assert chunked.stopped_at is None and chunked.steps == 8
    assert not getattr(engine.manager.text_to_image().transformer, "peft_config", None)  # parent untouched

    straight = replace(request, output_dir=tmp_path / "straight" / "out", work_dir=tmp_path / "straight" / "work")
    one_run = train_on_manager(engine.manager, straight, NullReporter())
    a, b = load_file(str(chunked.lora_path)), load_file(str(one_run.lora_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_stop_between_chunks_keeps_the_checkpoint(tmp_path, one_torch_thread, monkeypatch):
    from lora_studio.engines.local.engine import make_local_engine
    from lora_studio.progress import Canceled

    gpu = gpu_calls.GpuEngine(make_local_engine(None, None, "cpu", "auto"))
    monkeypatch.setattr(gpu_calls, "_entry_points", gpu_calls.build_entry_points(decorate=lambda fn, d: fn))

    class StopAfterFirstChunk(NullReporter):
        def check_cancel(self):
            if any("step 3/8 checkpointed" in line for line in self.logs):
                raise Canceled("Canceled by the user.")

    request = TrainRequest(dataset_dir=make_dataset(tmp_path / "data"), output_dir=tmp_path / "out",
                           work_dir=tmp_path / "work", trigger="ohwx", steps=8, rank=4, learning_rate=1e-3,
                           resolution=64, checkpoint_every=0, sample_every=0)
    reporter = StopAfterFirstChunk()
    with pytest.raises(Canceled):
        gpu_calls.train_in_chunks(gpu.key, request, reporter, None, steps_per_call=3)
    assert [p.name for p in (tmp_path / "work" / "checkpoints").iterdir()] == ["step_000003"]
    assert "Canceled after step 3; its checkpoint resumes the run." in reporter.logs
    assert not (tmp_path / "out").exists()


def test_studio_uses_gpu_calls_on_zero_gpu(tmp_path, monkeypatch):
    from lora_studio.config import Settings
    from lora_studio.studio import Studio

    monkeypatch.setattr(gpu_calls, "zero_gpu_active", lambda: True)
    with Studio(Settings(workspace=tmp_path / "ws"), start=False) as studio:
        assert "ZeroGPU" in studio.gpu_note()
        engine = studio.engine()
        assert isinstance(engine, gpu_calls.GpuEngine) and engine.manager is engine.inner.manager
        assert "Tiny built-in Flux" in engine.describe()
    with Studio(Settings(workspace=tmp_path / "ws2", engine="replicate"), start=False) as studio:
        assert studio.gpu_note() == ""
        assert not isinstance(studio.engine(), gpu_calls.GpuEngine)  # remote GPUs: nothing to wrap
