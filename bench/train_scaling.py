"""Training throughput in worker processes against the in-process loop, on the CPU with the tiny Flux.

    python bench/train_scaling.py                 # 1 and 2 worker processes, 30 steps each
    python bench/train_scaling.py --steps 60 --processes 1,2,4

Each worker process takes one sample of every step's batch (kohya's batch per device), so N processes
train N images per step. Printed per row: steps/s and images/s measured between the first and the
last step the workers reported (from the time stamps in the job's events file, so polling does not
blur them), the ratio of images/s to the in-process loop at batch 1, and apart from that the start-up
cost: seconds from launching the processes to their first step (importing torch and diffusers,
building the model, reading the cache). On a CPU the ranks share the same cores, so the ratio says
what the process boundary and the gradient all-reduce cost, not what a second GPU buys; on a machine
with GPUs, `bench/gpu_suite.py --only scaling` measures that.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from lora_studio.engines.base import TrainRequest  # noqa: E402
from lora_studio.progress import NullReporter  # noqa: E402
from lora_studio.training.worker_events import EVENTS  # noqa: E402
from lora_studio.training.workers import WorkerPlan, train_in_workers  # noqa: E402
from train_overhead import TimingReporter  # noqa: E402 - progress time stamps: one per training step


def make_dataset(folder: Path, count: int = 8, side: int = 64) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"ohwx, synthetic picture {i}")
    return folder


def request(work: Path, data: Path, steps: int, batch: int, resolution: int = 64) -> TrainRequest:
    return TrainRequest(dataset_dir=data, output_dir=work / "out", work_dir=work / "work", trigger="ohwx",
                        steps=steps, rank=4, resolution=resolution, batch_size=batch, checkpoint_every=0,
                        sample_every=0, resume=False)


def rate(stamps: list[float]) -> float | None:
    """Steps per second between the first and the last step stamp (the first step's own time excluded)."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None


def worker_timing(job_dir: Path, launched: float) -> tuple[list[float], float | None]:
    """(time stamps of each step's loss event, seconds from launch to the first step) of a worker run."""
    stamps = []
    for line in (job_dir / "worker" / EVENTS).read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("kind") == "metric" and event["args"][0] == "loss":
            stamps.append(float(event["time"]))
    return stamps, (stamps[0] - launched) if stamps else None


def in_process(work: Path, data: Path, steps: int) -> dict:
    from lora_studio.engines.builtin.tiny import build_tiny_flux
    from lora_studio.training.trainer import train_lora

    reporter = TimingReporter()
    train_lora(build_tiny_flux(), request(work, data, steps, 1), reporter)
    return {"steps/s": rate(reporter.stamps[:steps]), "batch": 1, "start s": None}


def in_workers(work: Path, data: Path, steps: int, processes: int, model: str = "tiny-flux",
               device: str = "cpu", gpu_ids: tuple[int, ...] = (), resolution: int = 64) -> dict:
    req = request(work, data, steps, processes, resolution)
    launched = time.time()
    train_in_workers(WorkerPlan(processes, device, gpu_ids), req, NullReporter(), model=model, memory_mode="auto")
    stamps, start = worker_timing(req.work_dir, launched)
    return {"steps/s": rate(stamps), "batch": processes, "start s": start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--processes", default="1,2", help="worker process counts to measure (default 1,2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1: the tiny model's matmuls are too small to "
                             "split, and more threads than free cores make every run wait on the others)")
    args = parser.parse_args(argv)
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the workers inherit it
    torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="train_scaling_") as tmp:
        root = Path(tmp)
        data = make_dataset(root / "data")
        rows = [("in-process loop", in_process(root / "app", data, args.steps))]
        for n in counts:
            rows.append((f"{n} worker process{'es' if n > 1 else ''}", in_workers(root / f"w{n}", data, args.steps, n)))
    base = rows[0][1]["steps/s"]
    print(f"Tiny Flux on the CPU, {args.steps} steps at 64 px, rank 4, {args.threads} thread(s) per process; "
          "one sample per process per step.\n")
    print("| run | batch | steps/s | images/s | images/s vs in-process | start-up s (apart) |")
    print("|---|---|---|---|---|---|")
    for name, row in rows:
        speed = row["steps/s"]
        images = speed * row["batch"] if speed else None
        ratio = images / base if images and base else None
        start = f"{row['start s']:.1f}" if row["start s"] is not None else "—"
        print(f"| {name} | {row['batch']} | {speed:.2f} | {images:.2f} | {ratio:.2f}x | {start} |"
              if speed else f"| {name} | {row['batch']} | ? | ? | ? | {start} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
