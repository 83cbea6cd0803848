"""What the user sees while a LoRA trains: a progress line per step, and sample images.

Samples are drawn from the cached prompt embedding with the adapter as trained so far and, when a
scorer is given, measured against the reference face, so the best checkpoint is the one that keeps
the identity, not the one with the lowest loss.
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Callable

import torch

from ..engines.base import TrainRequest
from ..progress import Reporter
from ..sizes import GB
from .checkpoints import LoopState
from .dataset import TextEmbedding
from .lease import PipelineLease

def report_step(reporter: Reporter, loop: LoopState, total: int, device: torch.device, log_every: int) -> None:
    step = loop.step
    it_per_s = 1.0 / max(statistics.median(loop.step_seconds), 1e-9)
    eta = (total - step) / it_per_s
    reporter.metric("loss", loop.last_loss, step)
    reporter.metric("loss_smooth", loop.loss_ema, step)
    reporter.progress(
        step / total,
        f"step {step}/{total} · loss {loop.loss_ema:.4f} · {it_per_s:.2f} it/s · ETA {duration(eta)}",
    )
    if step % log_every == 0 or step == total or step == 1:
        reporter.metric("it_per_s", it_per_s, step)
        reporter.metric("eta_s", eta, step)
        peak = peak_memory_bytes(device, loop)
        if peak is not None:
            reporter.metric("peak_mem_gb", peak / GB, step)
        reporter.log(
            f"step {step}/{total}: loss {loop.last_loss:.4f} (smoothed {loop.loss_ema:.4f}), "
            f"{it_per_s:.2f} it/s, ETA {duration(eta)}"
            + (f", peak memory {peak / GB:.2f} GB" if peak is not None else "")
        )


def peak_memory_bytes(device: torch.device, loop: LoopState) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import psutil
    except ImportError:
        return None
    loop.peak_bytes = max(loop.peak_bytes, psutil.Process().memory_info().rss)
    return loop.peak_bytes


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def sample(
    pipe, lease: PipelineLease, layout, text: TextEmbedding, negative: TextEmbedding | None, step: int,
    request: TrainRequest, work_dir: Path, device: torch.device, dtype: torch.dtype, autocast, loop: LoopState,
    reporter: Reporter, scorer: Callable | None,
) -> float | None:
    """One image with the adapter as trained so far, from the cached prompt embedding (and, for a Klein
    base's classifier-free guidance, the cached "" embedding), as the family's layout draws it."""
    transformer = pipe.transformer
    transformer.eval()
    vae_device = lease.device_of("vae")
    lease.move("vae", device)
    try:
        generator = torch.Generator("cpu").manual_seed(request.seed)
        with autocast:
            image = pipe(
                **layout.sample_arguments(pipe, text, negative),
                height=request.resolution,
                width=request.resolution,
                num_inference_steps=layout.sample_steps(pipe) if request.resolution >= 256 else 4,
                generator=generator,
                output_type="pil",
                callback_on_step_end=lambda _pipe, _i, _t, kwargs: (reporter.check_cancel(), kwargs)[1],
            ).images[0]
    finally:
        lease.move("vae", vae_device)
        transformer.train()
    path = (request.samples_dir or work_dir / "samples") / f"step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)
    loop.samples.append(str(path))
    reporter.output("samples", list(loop.samples))
    if scorer is None:
        return None
    score = scorer(image)
    if score is not None:
        reporter.metric("identity", float(score), step)
    return None if score is None else float(score)

