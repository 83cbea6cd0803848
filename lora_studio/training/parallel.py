"""Data parallelism for the training loop: which part of each global batch this process trains on.

`request.batch_size` is the *effective* batch of a step, whatever number of processes runs it. Every
rank draws the same global batch from the same seeded schedule and the same noise for all of it
(one generator, seeded alike on every rank), then trains only its contiguous shard. Each rank's loss
is scaled by `world * shard / batch`, so when DDP averages the gradients over the ranks the result is
the gradient of the mean loss over the whole global batch: the same step a single process takes at
that batch size (within float reduction order). A rank whose shard is empty (a batch smaller than the
world) still runs one sample at weight 0, so it joins every gradient all-reduce.

Because a checkpoint holds the global state only (LoRA, optimizer, generator, data position), a run
resumes on any number of processes. `SINGLE` is the in-process case: every method is a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shard:
    """This rank's part of one global batch: positions in it, and the weight of its mean loss."""

    positions: list[int]  # indices into the global batch (never empty: see `weight`)
    weight: float  # multiply the shard's mean loss by this before backward


class DataParallel:
    """One training process among `world`; `accelerator` is accelerate's, or None in-process."""

    def __init__(self, accelerator: Any = None) -> None:
        self.accelerator = accelerator
        self.world = int(getattr(accelerator, "num_processes", 1) or 1)
        self.rank = int(getattr(accelerator, "process_index", 0) or 0)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, size: int) -> Shard:
        """Contiguous positions of a global batch of `size` for this rank (sizes differ by one at most)."""
        if not self.distributed:
            return Shard(list(range(size)), 1.0)
        base, extra = divmod(size, self.world)
        start = self.rank * base + min(self.rank, extra)
        count = base + (1 if self.rank < extra else 0)
        if count == 0:
            return Shard([0], 0.0)
        return Shard(list(range(start, start + count)), self.world * count / size)

    def wrap(self, transformer):
        """The module to run forward and backward on: DDP around the transformer when distributed
        (it averages the LoRA gradients during backward), the transformer itself otherwise. Modules
        are already placed by the trainer (block offloading moves them itself), so nothing moves."""
        if not self.distributed:
            return transformer
        return self.accelerator.prepare_model(transformer, device_placement=False)

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of a number over the ranks (the global batch's loss from each shard's weighted part)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        return float(self.accelerator.reduce(tensor, reduction="mean")[0])

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is True on one (a stop seen by rank 0 stops all, at the same step)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.accelerator.reduce(tensor, reduction="sum")[0] > 0)

    def barrier(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()


SINGLE = DataParallel(None)
