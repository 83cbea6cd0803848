"""The flow-matching LoRA step, the same for every family: one training step and the optimizer.

The recipe follows diffusers' Flux DreamBooth-LoRA examples (FLUX.1's and FLUX.2 [klein]'s); what
differs between the families (packing, ids, the noise level for a u, weighting, the transformer's
inputs) is the layout's (layouts.py):

    x      = cached latent (FLUX.1: (mean - shift) * scale; Klein: patchified, BatchNorm-normalised)
    noise  ~ N(0, I)
    u      ~ logit-normal(0, 1)                   (the SD3 paper's choice, both families)
    sigma  = layout.noise_levels(u)               (FLUX.1: the scheduler's table; Klein: shifted by tokens)
    x_t    = (1 - sigma) * x + sigma * noise
    pred   = layout.predict(transformer, x_t, cached text embeddings, timestep)
    loss   = weight(sigma) * |pred - (noise - x)|^2    (mean over pixels, then batch)

then grad-norm clipping at 1.0 and an AdamW step (bitsandbytes AdamW8bit on CUDA when installed).
Every random draw (noise, timesteps) comes from the one generator the caller passes, so a run is a
pure function of its seed on the CPU.
"""
from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling

from ..engines.base import EngineError
from ..engines.memory import MemoryPlan
from .dataset import TextEmbedding
from .layouts import WEIGHTING_SCHEME, Layout
from .parallel import Shard

ADAPTER_NAME = "lora_studio_training"

MAX_GRAD_NORM = 1.0
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-4
ADAM_EPS = 1e-8


def train_step(
    transformer, optimizer, params, latents: torch.Tensor, texts: list[TextEmbedding], layout: Layout,
    generator: torch.Generator, ids: dict, autocast, shard: Shard | None = None, backward=None,
) -> float:
    """One optimizer step on `latents` (the whole global batch); returns the loss this process trained.

    With a `shard` (data-parallel workers, see parallel.py) the noise and timesteps are drawn for the
    whole global batch, so every rank's generator stays in step, and only the shard's samples run; the
    returned value is the shard's mean loss times its weight (their mean over the ranks is the batch's).
    """
    batch = latents.shape[0]
    device, dtype = latents.device, latents.dtype

    noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=dtype)
    u = compute_density_for_timestep_sampling(
        WEIGHTING_SCHEME, batch, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=generator
    )
    weight = 1.0
    if shard is not None and len(shard.positions) != batch:
        mine = torch.tensor(shard.positions)
        latents, noise, u = latents[mine], noise[mine], u[mine]
        texts = [texts[i] for i in shard.positions]
        batch, weight = len(shard.positions), shard.weight
    elif shard is not None:
        weight = shard.weight
    sigmas, timesteps = layout.noise_levels(u, latents)
    sigma = sigmas.view(batch, 1, 1, 1)
    noisy = (1.0 - sigma) * latents + sigma * noise

    with autocast:
        prediction = layout.predict(transformer, noisy, texts, timesteps, ids)

    target = noise - latents
    weighting = layout.weighting(sigmas).view(batch, 1, 1, 1)
    loss = (weighting.float() * (prediction.float() - target.float()) ** 2).reshape(batch, -1).mean(1).mean()
    if weight != 1.0:
        loss = loss * weight

    (backward or torch.Tensor.backward)(loss)
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def trainable_parameters(transformer) -> list[torch.nn.Parameter]:
    params = []
    for name, param in transformer.named_parameters():
        mine = f".{ADAPTER_NAME}." in name
        param.requires_grad_(mine)
        if mine:
            param.data = param.data.float()  # train LoRA weights in fp32 whatever the base dtype
            params.append(param)
    if not params:
        raise EngineError("Adding the LoRA adapter created no trainable weights.")
    return params


def make_optimizer(params, learning_rate: float, plan: MemoryPlan, device: torch.device):
    if plan.optimizer_8bit and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(
                params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS
            )
        except ImportError:
            pass
    return torch.optim.AdamW(params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS)
