"""The sentence a training that ran out of memory ends with: where, with how much, and what would fit.

A user who hits an out-of-memory error needs three facts to try again sensibly: the step it stopped
at (the first steps are the usual place; a late one means a sample or a bigger bucket), the memory the
device had and how much of it was in use, and a setting that the memory plan (engines/memory/plan.py)
says fits that device. Checkpoints saved before the failure are kept, and the sentence says so.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..engines.base import TrainRequest
from ..engines.memory import _HEADROOM, LADDER, MemoryPlan, lighter_mode, plan_need
from ..sizes import GB
from . import checkpoints as ckpt

SMALLER_RESOLUTIONS = (1024, 768, 512, 384, 256)


def memory_had(device: torch.device) -> tuple[int | None, int | None, str]:
    """(total bytes, peak bytes in use, what they are) of the device the training ran on."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            total = torch.cuda.get_device_properties(device).total_memory
            return total, torch.cuda.max_memory_allocated(device), f"GPU {device.index or 0}"
        except (RuntimeError, AssertionError):
            return None, None, "the GPU"
    try:
        import psutil

        return psutil.virtual_memory().total, psutil.Process().memory_info().rss, "this machine's RAM"
    except (ImportError, OSError):
        return None, None, "this machine's RAM"


def fitting_setting(plan: MemoryPlan, request: TrainRequest, total: int | None) -> str:
    """The lightest change the plan says fits `total` bytes: a lighter mode, else a lower resolution."""
    rank, mlp, resolution = int(request.rank), request.train_mlp, int(request.resolution)
    if total is None:  # no GPU to plan for: the next mode down, with what it plans on FLUX.1-dev
        lighter = lighter_mode(plan.mode)
        if lighter is None:
            return "try a lower resolution (512) or a GPU with more memory"
        need = plan_need(lighter, resolution, rank, mlp).total / GB
        return f"try memory mode '{lighter}' (planned {need:.1f} GB for FLUX.1-dev at {resolution} px) or a lower resolution"
    budget = total * _HEADROOM
    start = LADDER.index(plan.mode) + 1 if plan.mode in LADDER else 1
    for mode in LADDER[start:]:
        need = plan_need(mode, resolution, rank, mlp).total
        if need <= budget:
            return f"the plan says memory mode '{mode}' fits ({need / GB:.1f} GB planned at {resolution} px)"
    for mode in (plan.mode if plan.mode in LADDER else LADDER[-1], LADDER[-1]):
        for smaller in (r for r in SMALLER_RESOLUTIONS if r < resolution):
            need = plan_need(mode, smaller, rank, mlp).total
            if need <= budget:
                return (f"the plan says {smaller} px fits in memory mode '{mode}' "
                        f"({need / GB:.1f} GB planned)")
    return "no memory mode fits this GPU at any resolution the plan knows: use a GPU with more memory"


def out_of_memory_sentence(plan: MemoryPlan, request: TrainRequest, step: int, device: torch.device,
                           checkpoints_dir: Path) -> str:
    total, peak, where = memory_had(device)
    had = ""
    if total is not None:
        had = f", with {total / GB:.1f} GB on {where}"
        if peak is not None:
            had += f" ({peak / GB:.1f} GB in use at the peak)"
    saved = [step_ for step_, _ in ckpt.list_checkpoints(checkpoints_dir)]
    kept = (f"Checkpoints up to step {saved[-1]} are kept; resume continues from there."
            if saved else "Nothing was saved from this attempt.")
    advice = fitting_setting(plan, request, total if torch.device(device).type == "cuda" else None)
    what = "Out of GPU memory" if torch.device(device).type == "cuda" else "Out of memory"
    return (f"{what} at step {step} of {request.steps} while training in memory mode '{plan.mode}' "
            f"at {request.resolution} px{had}: {advice}. {kept}")
