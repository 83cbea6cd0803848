"""The flow-matching LoRA recipe for FLUX.1: which layers get a LoRA, and one training step.

The recipe follows diffusers' Flux DreamBooth-LoRA example:

    x      = cached VAE latent mean, already (latent - shift_factor) * scaling_factor
    noise  ~ N(0, I)
    u      ~ density(weighting scheme)           (logit-normal(0, 1) here, the SD3 paper's choice)
    sigma  = scheduler sigma table at u          (FLUX.1-dev's FlowMatchEuler table, unshifted)
    x_t    = (1 - sigma) * x + sigma * noise     packed into 2x2 tokens
    pred   = transformer(x_t, timestep=sigma*1000/1000, guidance=1.0, cached text embeddings)
    loss   = weight(sigma) * |unpack(pred) - (noise - x)|^2    (mean over pixels, then batch)

then grad-norm clipping at 1.0 and an AdamW step (bitsandbytes AdamW8bit on CUDA when installed).
Every random draw (noise, timesteps) comes from the one generator the caller passes, so a run is a
pure function of its seed on the CPU.
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from ..engines.base import EngineError
from ..engines.memory import MemoryPlan
from .dataset import TextEmbedding
from .parallel import Shard

ADAPTER_NAME = "lora_studio_training"

WEIGHTING_SCHEME = "logit_normal"
TRAIN_GUIDANCE = 1.0  # the guidance embedding input while training (diffusers' examples use 1)
MAX_GRAD_NORM = 1.0
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-4
ADAM_EPS = 1e-8


def train_step(
    transformer, optimizer, params, latents: torch.Tensor, texts: list[TextEmbedding],
    sigmas_table: torch.Tensor, timesteps_table: torch.Tensor, generator: torch.Generator,
    image_ids: dict, guidance_embeds: bool, autocast, shard: Shard | None = None, backward=None,
) -> float:
    """One optimizer step on `latents` (the whole global batch); returns the loss this process trained.

    With a `shard` (data-parallel workers, see parallel.py) the noise and timesteps are drawn for the
    whole global batch, so every rank's generator stays in step, and only the shard's samples run; the
    returned value is the shard's mean loss times its weight (their mean over the ranks is the batch's).
    """
    batch, channels, height, width = latents.shape
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
    index = (u * len(sigmas_table)).long().clamp(0, len(sigmas_table) - 1)
    sigmas = sigmas_table[index].to(device=device, dtype=dtype)
    timesteps = timesteps_table[index].to(device=device)
    sigma = sigmas.view(batch, 1, 1, 1)
    noisy = (1.0 - sigma) * latents + sigma * noise

    packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
    if (height, width) not in image_ids:
        image_ids[(height, width)] = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
    prompt_embeds = torch.stack([t.prompt_embeds for t in texts])
    pooled = torch.stack([t.pooled for t in texts])
    guidance = torch.full((batch,), TRAIN_GUIDANCE, device=device, dtype=torch.float32) if guidance_embeds else None

    with autocast:
        prediction = transformer(
            hidden_states=packed,
            timestep=timesteps / 1000,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=texts[0].text_ids,
            img_ids=image_ids[(height, width)],
            return_dict=False,
        )[0]
    # _unpack_latents takes pixel sizes; with vae_scale_factor 1 they equal the latent sizes.
    prediction = FluxPipeline._unpack_latents(prediction, height, width, 1)

    target = noise - latents
    weighting = compute_loss_weighting_for_sd3(WEIGHTING_SCHEME, sigmas).view(batch, 1, 1, 1)
    loss = (weighting.float() * (prediction.float() - target.float()) ** 2).reshape(batch, -1).mean(1).mean()
    if weight != 1.0:
        loss = loss * weight

    (backward or torch.Tensor.backward)(loss)
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def sigma_table(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The training sigma/timestep tables of a fresh copy of the pipeline's scheduler (the pipeline's
    own scheduler is reshaped by every inference call)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return scheduler.sigmas.detach().float().cpu(), scheduler.timesteps.detach().float().cpu()


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
