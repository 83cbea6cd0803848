"""One training run's state: what was asked, where it runs, and what each step of the trainer fills in.

`start_run` is the trainer's first step (trainer.py reads the rest): captions with the trigger, aspect
buckets and the batch order, the memory plan, and the run's identity, the fingerprint a checkpoint must
match to be resumed. Nothing is borrowed from the pipeline yet but the lease's record of it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ..engines.base import EngineError, TrainRequest
from ..engines.lora import target_modules
from ..engines.memory import MemoryPlan, plan_for_pipeline
from ..progress import Canceled, Reporter
from .checkpoints import LoopState
from .dataset import (
    BatchSchedule,
    Bucket,
    Example,
    TextEmbedding,
    assign_buckets,
    bucket_multiple,
    dataset_hash,
    load_examples,
    make_buckets,
    module_fingerprint,
)
from .layouts import Layout, layout_for
from .lease import PipelineLease
from .parallel import DataParallel
from .resume import fingerprint as fingerprint_run

if TYPE_CHECKING:
    from PIL import Image

Scorer = Callable[["Image.Image"], float | None]


@dataclass
class Run:
    """One training run: what was asked, where it runs, what `start_run` decided, and what the later steps
    hold (the cached tensors, the optimizer, the loop's position)."""

    pipe: object  # FluxPipeline | Flux2KleinPipeline
    request: TrainRequest
    reporter: Reporter
    device: torch.device
    dtype: torch.dtype
    parallel: DataParallel
    sample_scorer: Scorer | None
    started: float
    # start_run: the data and the run's identity
    examples: list[Example]
    groups: dict[Bucket, list[int]]
    schedule: BatchSchedule
    sample_prompt: str
    plan: MemoryPlan
    rank: int
    alpha: float
    targets: list[str]
    data_hash: str
    fingerprint: str
    lease: PipelineLease
    layout: Layout  # what the pipeline's family does differently (layouts.py)
    loop: LoopState = field(default_factory=LoopState)
    generator: torch.Generator = field(default_factory=torch.Generator)
    # the trainer's _cache and _add_adapter
    latents: list[torch.Tensor] = field(default_factory=list)
    texts: dict[str, TextEmbedding] = field(default_factory=dict)
    params: list[torch.nn.Parameter] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    model: torch.nn.Module | None = None  # the transformer, or DDP around it

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def work_dir(self) -> Path:
        return Path(self.request.work_dir)

    @property
    def checkpoints_dir(self) -> Path:
        return self.work_dir / "checkpoints"

    @property
    def main(self) -> bool:
        return self.parallel.is_main

    def check_cancel(self) -> None:
        """In step on every rank: rank 0 hears the user, all stop at the same step."""
        if not self.parallel.distributed:
            self.reporter.check_cancel()
        elif self.parallel.any(self.main and self.reporter.cancel_requested, self.device):
            raise Canceled("Canceled by the user.")


def run_device(device: str | torch.device) -> torch.device:
    """The device with its index ("cuda" is the current GPU), as memory statistics want it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def start_run(pipe, request: TrainRequest, reporter: Reporter, device: torch.device,
              dtype: torch.dtype, sample_scorer: Scorer | None, parallel: DataParallel) -> Run:
    """The first step: the data, the memory plan and the run's identity, said in the log."""
    started = time.perf_counter()
    try:
        examples = load_examples(Path(request.dataset_dir), request.trigger)
    except (OSError, ValueError) as error:
        raise EngineError(f"Cannot read the training images: {error}") from error
    layout = layout_for(pipe)
    # Sides divide by the VAE's downscale times the 2x2 patches both families make tokens of (16 px at
    # full size; less for the tiny models' shallower VAEs).
    buckets = make_buckets(request.resolution, bucket_multiple(int(getattr(pipe, "vae_scale_factor", 8))))
    groups = assign_buckets(examples, buckets)
    rank = int(request.rank)
    plan = plan_for_pipeline(request.memory_mode, pipe, device, request.resolution, rank, request.train_mlp)
    alpha = float(request.alpha if request.alpha is not None else request.rank)
    targets = target_modules(pipe.transformer, request.train_mlp)
    if not targets:
        raise EngineError("The transformer has no attention layers to train a LoRA on.")
    data_hash = dataset_hash(examples)
    fingerprint = fingerprint_run(request, rank, alpha, targets, data_hash, module_fingerprint(pipe.transformer),
                                  recipe=layout.family.key)
    reporter.log(
        f"Training a {layout.family.title} LoRA for '{request.trigger}': {len(examples)} images in {len(groups)} aspect "
        f"bucket(s) ({', '.join(f'{b}: {len(m)}' for b, m in groups.items())}), {request.steps} steps, "
        f"rank {rank}, alpha {alpha:g}, learning rate {request.learning_rate:g}, batch {request.batch_size}, "
        f"{request.resolution} px, on {device} in {str(dtype).replace('torch.', '')}."
        + (f" Data-parallel over {parallel.world} processes: each step's batch of {request.batch_size} is "
           "split between them and their gradients averaged (learning rate not scaled)."
           if parallel.distributed else "")
    )
    reporter.log(plan.explain())
    run = Run(
        pipe=pipe, request=request, reporter=reporter, device=device, dtype=dtype, parallel=parallel,
        sample_scorer=sample_scorer, started=started, examples=examples, groups=groups,
        schedule=BatchSchedule(groups, request.batch_size, request.seed),
        sample_prompt=request.sample_prompt.strip() or f"{request.trigger}, portrait photo",
        plan=plan, rank=rank, alpha=alpha, targets=targets, data_hash=data_hash, fingerprint=fingerprint,
        lease=PipelineLease(pipe), layout=layout, generator=torch.Generator("cpu").manual_seed(request.seed),
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return run
