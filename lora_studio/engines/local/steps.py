"""Every pipeline call of the local engine, whatever the family, goes through `draw`: the job hears
each denoising step (progress.model_step), and a stop takes effect at the next step.

diffusers calls `callback_on_step_end` after each step; the job's listener raises `Canceled` there,
which leaves the pipeline at once (its `_interrupt` flag would still run the remaining loop and the
VAE for an image nobody wants). What the pipeline's own end would have done is done here instead:
offloaded models go back and stateful caches (first-block cache) are reset, so the next job starts
from a clean pipeline.
"""
from __future__ import annotations

from typing import Any

from ...progress import Canceled, model_step


def draw(pipe, images: int = 1, **call: Any):
    """`pipe(**call)` with its steps told to the job; `images`: how many the call draws at once."""
    total = int(call.get("num_inference_steps") or 1)
    model_step(0, total, images)  # a stop asked while the model loaded ends the job before any step

    def on_step(pipeline, index: int, timestep, tensors: dict) -> dict:
        model_step(index + 1, getattr(pipeline, "num_timesteps", None) or total, images)
        return tensors

    try:
        return pipe(**call, callback_on_step_end=on_step)
    except Canceled:
        pipe.maybe_free_model_hooks()
        raise
