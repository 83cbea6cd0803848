"""Training in worker processes on the CPU: two gloo ranks train what one process trains at twice the
batch; a rank killed, out of memory or stopped ends the job in words while the app keeps serving; and
the whole thing through the running app's API.

Each test starts real worker processes (torch.distributed.run for two ranks, the worker alone when
isolated): about half a minute each on a 2-core machine, most of it importing torch and diffusers.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.config import Settings
from lora_studio.engines.base import EngineError, OutOfMemory
from lora_studio.errors import UserError
from lora_studio.engines.builtin.tiny import build_tiny_flux
from lora_studio.progress import NullReporter
from lora_studio.services.datasets import dataset_from_folder
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio
from lora_studio.training import checkpoints as ckpt
from lora_studio.training.trainer import train_lora
from lora_studio.training.workers import FAULT_ENV, WorkerPlan, train_in_workers
from tests.conftest import noise_image
from tests.lora_factory import probe_transformer
from tests.test_training import request

pytestmark = pytest.mark.slow  # every test starts worker processes

# Two ranks at batch 1 each against one process at batch 2 (float32, CPU): the gradients differ only by
# the order of the all-reduce sum; after 4 AdamW steps we measured 5e-8 at most. Stated bound:
TOLERANCE = 1e-6


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to read its status counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def worker_pids(job_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in (job_dir / "worker" / "pids").iterdir()]


def dataset(studio: Studio, folder: Path) -> str:
    folder.mkdir()
    for i in range(4):
        noise_image(i, 64).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"photo of mila_v1, view {i}")
    return dataset_from_folder(studio.store, sorted(folder.glob("*.png")), "mila_v1")["id"]


def wait_for(condition, timeout: float = 240.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_gloo_ranks_train_what_one_process_trains_at_twice_the_batch(tmp_path):
    one = request(tmp_path / "one", steps=4, batch_size=2, sample_every=4)
    train_lora(build_tiny_flux(), one, NullReporter())

    two = request(tmp_path / "two", dataset_dir=one.dataset_dir, steps=4, batch_size=2, sample_every=4)
    reporter = NullReporter()
    result = train_in_workers(WorkerPlan(2, "cpu"), two, reporter, model="tiny-flux", memory_mode="auto")

    assert result.steps == 4 and result.metadata["processes"] == 2 and result.metadata["batch_size"] == 2
    assert [s for s, _ in reporter.metrics["loss"]] == [1, 2, 3, 4]  # rank 0 reported, once per step
    assert any("Data-parallel over 2 processes" in line for line in reporter.logs)
    assert Path(reporter.outputs["samples"][0]).is_file()
    a, b = load_file(str(one.output_dir / "lora.safetensors")), load_file(str(result.lora_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=TOLERANCE, rtol=0), key
    assert not all(torch.equal(a[k], torch.zeros_like(a[k])) for k in a)

    kohya = [load_file(str(folder / "lora_kohya.safetensors")) for folder in (one.output_dir, two.output_dir)]
    assert kohya[0].keys() == kohya[1].keys()
    assert all(torch.allclose(kohya[0][k], kohya[1][k], atol=TOLERANCE, rtol=0) for k in kohya[0])
    outputs = []  # both diffusers files load into a fresh pipeline and move it the same way
    for folder in (one.output_dir, two.output_dir):
        pipe = build_tiny_flux()
        pipe.load_lora_weights(str(folder / "lora.safetensors"), adapter_name="x")
        outputs.append(probe_transformer(pipe.transformer, side=16, tokens=8, timestep=0.5, seed=7))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert not any(alive(pid) for pid in worker_pids(two.work_dir))


@pytest.mark.wide
def test_two_gloo_ranks_at_flux_widths_equal_one_process_and_their_kohya_files_load_the_same(wide, tmp_path):
    one = request(tmp_path / "one", steps=2, batch_size=2, resolution=32)
    train_lora(wide, one, NullReporter())
    two = request(tmp_path / "two", dataset_dir=one.dataset_dir, steps=2, batch_size=2, resolution=32)
    result = train_in_workers(WorkerPlan(2, "cpu"), two, NullReporter(), model="wide-flux", memory_mode="auto")

    a, b = load_file(str(one.output_dir / "lora.safetensors")), load_file(str(result.lora_path))
    assert a.keys() == b.keys()
    # 3072-wide sums reduce in another order across two ranks, and AdamW divides each gradient by its own
    # size, so an element whose gradient is ~0 can move by a different part of a step. No element may differ
    # by more than Adam can move it (one learning rate per step), and one in ten thousand may differ past 1e-5:
    # the second bound is what shows the two runs are the same training (CI saw a worst of 1.9e-4 once).
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    off = sum(int((a[k] - b[k]).abs().gt(10 * TOLERANCE).sum()) for k in a) / sum(a[k].numel() for k in a)
    assert worst <= one.learning_rate * one.steps and off <= 1e-4, (worst, off)
    outputs = []  # the kohya files, single blocks included at this width, through diffusers' kohya loader
    for folder in (one.output_dir, two.output_dir):
        wide.load_lora_weights(str(folder / "lora_kohya.safetensors"), adapter_name="kohya")
        outputs.append(probe_transformer(wide.transformer, side=4, tokens=8, timestep=0.5, seed=7))
        wide.unload_lora_weights()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_a_rank_out_of_memory_fails_the_run_with_the_step_the_memory_and_a_fitting_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "oom@3:1")  # rank 1 raises torch.OutOfMemoryError at step 3
    req = request(tmp_path, steps=6, batch_size=2, checkpoint_every=1, memory_mode="full")
    with pytest.raises(OutOfMemory) as caught:
        train_in_workers(WorkerPlan(2, "cpu"), req, NullReporter(), model="tiny-flux", memory_mode="auto")
    sentence = str(caught.value)
    assert "at step 3 of 6" in sentence
    assert " GB on this machine's RAM" in sentence and "in use at the peak" in sentence
    assert "memory mode 'checkpointing'" in sentence
    assert "Checkpoints up to step 2 are kept" in sentence
    assert [s for s, _ in ckpt.list_checkpoints(req.work_dir / "checkpoints")][-1] == 2
    assert not any(alive(pid) for pid in worker_pids(req.work_dir))


def test_a_worker_gone_silent_is_stopped_past_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "hang@2")  # the forward pass of step 2 never returns
    req = request(tmp_path, steps=6, checkpoint_every=1)
    with pytest.raises(EngineError, match="stopped answering at step 2 of 6") as caught:
        train_in_workers(WorkerPlan(1, "cpu", heartbeat_s=10), req, NullReporter(), model="tiny-flux",
                         memory_mode="auto")
    assert "Checkpoints up to step 1 are kept" in str(caught.value)
    assert not any(alive(pid) for pid in worker_pids(req.work_dir))


@pytest.fixture
def two_rank_studio(tmp_path):
    with Studio(Settings(workspace=tmp_path / "ws", train_gpus="cpu:2")) as studio:
        yield studio, dataset(studio, tmp_path / "set")


def test_a_rank_killed_mid_run_fails_the_job_in_words_and_resume_finishes_on_one_process(tmp_path):
    studio = Studio(Settings(workspace=tmp_path / "ws", train_gpus="cpu:2"))
    try:
        job = studio.training.start(dataset(studio, tmp_path / "set"), TrainOptions(
            name="mila", trigger="mila_v1", steps=40, rank=4, checkpoint_every=2, sample_every=40))
        job_dir = studio.store.job_dir(job.id)
        wait_for(lambda: ckpt.list_checkpoints(job_dir / "checkpoints"), what="a first checkpoint")
        rank1 = int((job_dir / "worker" / "pids" / "rank_1").read_text())
        os.kill(rank1, 9)

        failed = studio.jobs.wait(job.id, 120)
        assert failed.status == "failed"
        assert "killed by signal 9" in failed.error and "The app kept serving" in failed.error, failed.error
        assert "Resume continues from there" in failed.error
        assert not any(alive(pid) for pid in worker_pids(job_dir))
        assert studio.jobs.list("train")[0].status == "failed"  # the queue still answers
        kept = ckpt.list_checkpoints(job_dir / "checkpoints")
        assert kept and all(ckpt.load_checkpoint(path).state.step == step for step, path in kept)
        assert studio.store.get("jobs", job.id)["params"]["batch_size"] == 2
    finally:
        studio.close()

    # Restarted without workers, the app resumes in its own process: one process, the same batch of 2.
    with Studio(Settings(workspace=tmp_path / "ws")) as again:
        again.jobs.resume(job.id)
        done = again.jobs.wait(job.id, 240)
        assert done.status == "succeeded", done.error
        assert any(f"Resumed from step_{kept[-1][0]:06d}" in line for line in done.logs)
        assert any("no longer offers" in line for line in done.logs)
        assert again.library.resolve("mila")


def test_cancel_during_a_two_rank_run_stops_every_process(two_rank_studio):
    studio, dataset_id = two_rank_studio
    job = studio.training.start(dataset_id, TrainOptions(name="mila", trigger="mila_v1", steps=200, rank=4,
                                                         checkpoint_every=100, sample_every=200))
    wait_for(lambda: studio.jobs.read_metrics(job.id).get("loss"), what="the first step")
    job_dir = studio.store.job_dir(job.id)
    pids = worker_pids(job_dir)
    assert len(pids) == 3  # the launcher and two ranks
    studio.jobs.cancel(job.id)
    done = studio.jobs.wait(job.id, 120)
    assert done.status == "canceled"
    assert any("Canceled at step" in line for line in done.logs)  # rank 0 saved where it stopped
    assert ckpt.list_checkpoints(job_dir / "checkpoints")
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "every worker process to end")


def test_a_worker_run_training_through_the_running_app(tmp_path):
    from gradio_client import Client

    from tests.app_server import running_app

    with running_app(tmp_path / "ws", train_gpus="isolated") as (studio, url):
        client = Client(url, verbose=False)
        dataset_id = dataset(studio, tmp_path / "set")
        with pytest.raises(UserError, match="can run"):  # only the offered places, whatever a stranger sends
            studio.training.start(dataset_id, TrainOptions(name="x", trigger="mila_v1", train_on="cpu:8"))
        def train(dataset_id: str, name: str) -> dict:
            """/start_training as a client sends it, then /job_status until the job ends."""
            job = client.predict(dataset_id, name, "mila_v1", "Standard", 6, 4, 0.001, 0, "", -1.0,
                                 api_name="/start_training")
            deadline = time.monotonic() + 240
            while not job["done"] and time.monotonic() < deadline:
                time.sleep(0.5)
                job = client.predict(job["id"], api_name="/job_status")
            return job

        # The API's /start_training keeps its inputs; it trains where the app trains by default.
        job = train(dataset_id, "mila")
        assert job["status"] == "succeeded", job["error"]
        assert any("1 worker process on the CPU" in line for line in job["logs"])
        assert any("step 6/6" in line for line in job["logs"])  # the worker's progress, replayed into the job
        assert job["outputs"]["lora_name"] == "mila"
        assert "mila" in json.dumps(client.predict(api_name="/list_loras"))
        assert studio.jobs.read_metrics(job["id"])["loss"]
        assert str(studio.store.root) not in json.dumps(job) and str(tmp_path) not in json.dumps(job)  # no paths
        assert any("in the job's output folder" in line for line in job["logs"])  # named by what it is

        # A worker that fails on a path (the data set's folder gone): the error names it, never its path.
        gone = dataset(studio, tmp_path / "gone")
        import shutil

        shutil.rmtree(studio.store.root / studio.store.get("datasets", gone)["dir"])
        failed = train(gone, "lost")
        assert failed["status"] == "failed" and "does not exist" in failed["error"], failed["error"]
        assert str(studio.store.root) not in json.dumps(failed) and str(tmp_path) not in json.dumps(failed)


def test_where_a_training_runs_is_parsed_and_launched_by_the_right_launcher(tmp_path, monkeypatch):
    from lora_studio.config import TrainPlacement
    from lora_studio.training.workers import launch_command

    for text in ("off", "isolated", "all", "0,1", "cpu:2"):
        assert TrainPlacement.parse(TrainPlacement.parse(text).spec()).spec() == text
    for bad in ("0,0", "gpu", "cpu:0", "-1", "1;rm"):
        with pytest.raises(ValueError, match="--train-gpus"):
            TrainPlacement.parse(bad)

    argv, env = launch_command(WorkerPlan(2, "cuda", (1, 2)), tmp_path)
    assert argv[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert argv[argv.index("--gpu_ids") + 1] == "1,2" and argv[argv.index("--num_processes") + 1] == "2"
    assert argv[-4:] == ["-m", "lora_studio.training.worker", "--job-dir", str(tmp_path)]
    argv, _ = launch_command(WorkerPlan(2, "cuda", (0, 1), accelerate_config="m0.yaml"), tmp_path)
    assert argv[argv.index("--config_file") + 1] == "m0.yaml" and "--multi_gpu" not in argv
    argv, _ = launch_command(WorkerPlan(2, "cpu"), tmp_path)
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    argv, env = launch_command(WorkerPlan(1, "cuda", (3,)), tmp_path)
    assert argv[1:3] == ["-m", "lora_studio.training.worker"] and env["CUDA_VISIBLE_DEVICES"] == "3"

    from lora_studio.training.placement import worker_processes

    config = tmp_path / "machine0.yaml"  # two machines: the batch takes one image per process of both
    config.write_text("distributed_type: MULTI_GPU\nnum_machines: 2\nnum_processes: 8\nmachine_rank: 0\n")
    monkeypatch.setenv("LORA_STUDIO_ACCELERATE_CONFIG", str(config))
    assert worker_processes(TrainPlacement.parse("0,1,2,3")) == 8
    assert worker_processes(TrainPlacement.parse("isolated")) == 1
