"""Where a training runs (`--train-gpus`, config.TrainPlacement): on the app's model, or in workers.

"app" borrows the model manager's loaded pipeline in this process (trainer.train_on_manager): no
second copy of the base, right for one GPU. "isolated" and "workers" run the same loop as worker
processes that load the base themselves (workers.py); the manager first gives up the GPUs they use.
ZeroGPU is not a placement: there every training runs in GPU-call-sized chunks (gpu_calls.py).

Importing this module loads no torch; each function imports what its placement needs.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from ..config import TrainPlacement
from ..engines.base import TrainRequest, TrainResult
from ..progress import Reporter

if TYPE_CHECKING:
    from ..engines.local import ModelManager


def train_placed(manager: "ModelManager", request: TrainRequest, reporter: Reporter,
                 sample_scorer: Callable | None = None, placement: TrainPlacement | None = None) -> TrainResult:
    """Train for the manager's model where `placement` says: in one go in this process by default."""
    if placement is not None and placement.kind != "app":
        from .workers import resolve_plan, train_in_workers

        plan = resolve_plan(placement.kind, placement.gpus, placement.cpu_processes, str(manager.device))
        note = manager.give_up(plan.gpu_ids if plan.device == "cuda" else ())
        if note:
            reporter.log(note)
        reference = str(request.reference_image) if sample_scorer is not None and request.reference_image else None
        return train_in_workers(plan, request, reporter, model=manager.model_id, memory_mode=manager.memory_mode,
                                reference=reference, second_model=manager.kontext_id)
    from .trainer import train_on_manager

    return train_on_manager(manager, request, reporter, sample_scorer=sample_scorer)


def worker_processes(placement: TrainPlacement) -> int:
    """How many processes a placement trains with on this machine (each takes one share of a batch)."""
    if placement.kind != "workers":
        return 1
    if placement.cpu_processes:
        return placement.cpu_processes
    from .workers import ACCELERATE_CONFIG_ENV, config_processes

    config = os.environ.get(ACCELERATE_CONFIG_ENV)
    if config:  # several machines: every process of every machine takes a share
        total = config_processes(config)
        if total:
            return total
    if placement.gpus is not None:
        return len(placement.gpus)
    import torch

    return max(1, torch.cuda.device_count() if torch.cuda.is_available() else 1)
