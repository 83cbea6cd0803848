"""A training worker process: `python -m lora_studio.training.worker --job-dir workspace/jobs/<id>`.

Started by workers.py through a launcher (one per rank under Accelerate or torch.distributed.run, or
alone for an "isolated" run). Each rank reads `worker/spec.json`, loads the base itself from the same
model id or folder as the app (the tiny and wide test models are rebuilt from their fixed seeds, so
every rank holds the same weights), and runs the very loop the app runs in-process
(`trainer.train_lora`) on its shard of each batch (parallel.py). Rank 0 reports through the events
file (worker_events.py); every rank writes its own failure there, so a rank that runs out of memory
says so even when rank 0 is only left waiting.

`spec["fault"]` is a test hook, set from the app's LORA_STUDIO_WORKER_FAULT: `{"kind": "oom" | "hang" |
"exit", "step": N, "rank": R}` makes rank R raise torch.OutOfMemoryError, stop answering, or die at
the forward pass of step N, so failures are tested on the real process tree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from ..engines.base import TrainRequest
from ..errors import StudioError
from ..progress import Canceled
from ..typed_json import from_json, to_json
from .worker_events import SPEC, EventWriter, QuietReporter, append_event, write_pid


def started(world: int, device: str) -> str:
    """The log's first line in words: "Worker process started on the CPU", "2 worker processes started
    on one GPU each, …" (what Accelerate calls the run, e.g. NO or MULTI_GPU, says nothing to a user)."""
    if device == "cpu":
        where = "the CPU"
    else:
        where = f"GPU {device.split(':')[1]}" if ":" in device else "the GPU"
    if world == 1:
        return f"Worker process started on {where}"
    return (f"{world} worker processes started on {'the CPU' if device == 'cpu' else 'one GPU each'}, each "
            "training a share of every batch")


def read_spec(folder: Path) -> dict:
    import json

    return json.loads((Path(folder) / SPEC).read_text(encoding="utf-8"))


def install_fault(transformer, fault: dict | None, rank: int) -> None:
    """The test hook: fail at the forward pass of a given training step on one rank."""
    if not fault or int(fault.get("rank", 0)) != rank:
        return
    import torch

    seen = {"steps": 0}

    def hook(module, args, kwargs):
        if not module.training:
            return
        seen["steps"] += 1
        if seen["steps"] < int(fault.get("step", 1)):
            return
        kind = fault.get("kind")
        if kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test hook)")
        if kind == "hang":
            while True:
                time.sleep(1)
        if kind == "exit":
            os._exit(17)

    transformer.register_forward_pre_hook(hook, with_kwargs=True)


def sample_scorer(reference: str | None):
    """The identity distance of each sample to the reference face, as the app measures it (None: no face)."""
    if not reference:
        return None
    from .. import identity
    from ..images import open_image

    try:
        face = identity.reference_descriptor(open_image(reference))
    except identity.NoFaceError:
        return None
    return lambda image: identity.score_image(image, face).distance


def run(folder: Path) -> int:
    from accelerate import Accelerator

    from ..engines.local import ModelManager, model_label
    from ..engines.speed import SpeedSettings
    from .parallel import DataParallel
    from .trainer import train_lora

    spec = read_spec(folder)
    accelerator = Accelerator(cpu=spec.get("device") == "cpu")
    parallel = DataParallel(accelerator)
    write_pid(folder, parallel.rank)
    reporter = EventWriter(folder, spec.get("app_pid")) if parallel.is_main else QuietReporter()
    try:
        if parallel.is_main:
            reporter.log(f"{started(parallel.world, str(accelerator.device))}; loading {model_label(spec['model'])}.")
        manager = ModelManager(model=spec["model"], kontext_model=spec.get("second_model"),
                               device=str(accelerator.device), memory_mode=spec.get("memory_mode", "auto"),
                               speed=SpeedSettings())
        request = from_json(TrainRequest, spec["request"], "The training request in worker/spec.json")
        scorer = sample_scorer(spec.get("reference")) if parallel.is_main else None
        with manager.for_training() as pipe:  # FLUX.1-dev, or Klein's base (its distilled one when alone)
            if parallel.is_main and manager.training_note():
                reporter.log(manager.training_note())
            install_fault(pipe.transformer, spec.get("fault"), parallel.rank)
            result = train_lora(pipe, request, reporter, device=manager.device, dtype=manager.dtype,
                                sample_scorer=scorer, parallel=parallel)
        if parallel.is_main:
            append_event(folder, "result", result=to_json(result))
        return 0
    except Canceled as exc:
        if parallel.is_main:
            append_event(folder, "canceled", message=str(exc) or "Canceled.")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure leaves the process in words
        traceback.print_exc()
        message = str(exc) if isinstance(exc, StudioError) else f"{type(exc).__name__}: {exc}"
        append_event(folder, "failed", rank=parallel.rank, error_type=type(exc).__name__, message=message)
        return 3
    finally:
        accelerator.end_training()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_studio.training.worker",
                                     description="One training worker process of a LoRA Studio job.")
    parser.add_argument("--job-dir", required=True, type=Path, help="the job's folder (workspace/jobs/<id>)")
    args = parser.parse_args(argv)
    return run(args.job_dir / "worker")


if __name__ == "__main__":
    sys.exit(main())
