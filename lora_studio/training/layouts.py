"""What differs between the model families inside the trainer: latents, tokens, ids, text, noise levels.

The loop (flow_matching.py) is the same for every family; it asks a layout, made for the pipeline it
trains (`layout_for`), how to turn the cached latents into the transformer's inputs and back:

    FLUX.1          latents (mean - shift) * scale, 16 channels; 2x2 patches packed into tokens
                    (FluxPipeline._pack_latents), ids (0, row, col); sigma from the scheduler's table at
                    a logit-normal u (diffusers' FLUX.1 DreamBooth script); the guidance embedding gets 1;
                    text: T5 sequence + CLIP pooled vector.
    FLUX.2 [klein]  latents patchified 2x2 into 128 channels and normalised by the VAE's BatchNorm
                    statistics, exactly as Flux2KleinPipeline encodes a reference image, then flattened
                    into tokens with ids (0, row, col, 0); sigma = the logit-normal u shifted by the
                    image's token count (KLEIN.training_sigma: s*u / (1 + (s-1)*u), s = exp(mu), mu from
                    0.5 at 256 tokens to 1.15 at 4096), no loss weighting, no guidance input; the
                    transformer takes sigma itself as its timestep (it multiplies by 1000).
                    Text: Qwen3's hidden states 9, 18, 27 stacked, from the pipeline's own encode_prompt.

Why this Klein recipe: diffusers' Klein DreamBooth script, musubi-tuner (its "flux2_shift") and
ai-toolkit all train Klein with flow matching toward noise - latents on logit-normal timesteps; the
shift by resolution follows the pipeline, which spends its sampling steps at the shifted sigmas its
`compute_empirical_mu` gives for the image's tokens, so a LoRA trains at the noise levels it is drawn at.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, FluxPipeline
from diffusers.training_utils import compute_loss_weighting_for_sd3

from ..engines.family import FLUX1, KLEIN, Family, family_of_pipeline
from .dataset import TextEmbedding

WEIGHTING_SCHEME = "logit_normal"  # FLUX.1's u density and loss weighting names (diffusers' training_utils)


@dataclass
class FluxLayout:
    """FLUX.1 (see the module docstring)."""

    sigmas_table: torch.Tensor
    timesteps_table: torch.Tensor
    guidance_embeds: bool
    family: Family = FLUX1

    @classmethod
    def of(cls, pipe) -> "FluxLayout":
        # A fresh copy of the scheduler: the pipeline's own is reshaped by every inference call.
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        return cls(scheduler.sigmas.detach().float().cpu(), scheduler.timesteps.detach().float().cpu(),
                   bool(getattr(pipe.transformer.config, "guidance_embeds", False)))

    # ---- caching ----
    @staticmethod
    def encode_latent(vae, pixels: torch.Tensor) -> torch.Tensor:
        mean = vae.encode(pixels).latent_dist.mean
        return (mean - vae.config.shift_factor) * vae.config.scaling_factor

    @staticmethod
    def encode_text(pipe, caption: str, device, max_length: int) -> dict[str, torch.Tensor]:
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=caption, prompt_2=None, device=device, num_images_per_prompt=1, max_sequence_length=max_length)
        return {"prompt_embeds": prompt_embeds[0].cpu(), "pooled": pooled[0].cpu(),
                "text_ids": text_ids.reshape(-1, 3).cpu()}

    @staticmethod
    def text_encoders(pipe) -> tuple:
        return (pipe.text_encoder, pipe.text_encoder_2)

    # ---- one step ----
    def noise_levels(self, u: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, the timesteps the transformer is given) for the samples u."""
        index = (u * len(self.sigmas_table)).long().clamp(0, len(self.sigmas_table) - 1)
        sigmas = self.sigmas_table[index].to(device=latents.device, dtype=latents.dtype)
        return sigmas, self.timesteps_table[index].to(device=latents.device) / 1000

    @staticmethod
    def weighting(sigmas: torch.Tensor) -> torch.Tensor:
        return compute_loss_weighting_for_sd3(WEIGHTING_SCHEME, sigmas)

    def predict(self, transformer, noisy: torch.Tensor, texts: list[TextEmbedding], timesteps: torch.Tensor,
                ids: dict) -> torch.Tensor:
        batch, channels, height, width = noisy.shape
        device, dtype = noisy.device, noisy.dtype
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        if (height, width) not in ids:
            ids[(height, width)] = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
        guidance = (torch.full((batch,), self.family.recipe.train_guidance, device=device, dtype=torch.float32)
                    if self.guidance_embeds else None)
        prediction = transformer(
            hidden_states=packed, timestep=timesteps, guidance=guidance,
            pooled_projections=torch.stack([t.pooled for t in texts]),
            encoder_hidden_states=torch.stack([t.prompt_embeds for t in texts]),
            txt_ids=texts[0].text_ids, img_ids=ids[(height, width)], return_dict=False,
        )[0]
        # _unpack_latents takes pixel sizes; with vae_scale_factor 1 they equal the latent sizes.
        return FluxPipeline._unpack_latents(prediction, height, width, 1)

    # ---- samples ----
    def sample_arguments(self, pipe, text: TextEmbedding, negative: TextEmbedding | None) -> dict:
        return {"prompt_embeds": text.prompt_embeds[None], "pooled_prompt_embeds": text.pooled[None],
                "guidance_scale": self.family.recipe.sample_guidance}

    def sample_steps(self, pipe) -> int:
        return self.family.recipe.sample_steps

    @staticmethod
    def needs_negative(pipe) -> bool:
        return False


@dataclass
class KleinLayout:
    """FLUX.2 [klein] (see the module docstring)."""

    family: Family = KLEIN

    @classmethod
    def of(cls, pipe) -> "KleinLayout":
        return cls()

    # ---- caching ----
    @staticmethod
    def encode_latent(vae, pixels: torch.Tensor) -> torch.Tensor:
        """As Flux2KleinPipeline encodes a reference: the posterior's mode, 2x2 patches, BatchNorm statistics."""
        latent = Flux2KleinPipeline._patchify_latents(vae.encode(pixels).latent_dist.mode())
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latent.device, latent.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latent.device,
                                                                                              latent.dtype)
        return (latent - mean) / std

    @staticmethod
    def encode_text(pipe, caption: str, device, max_length: int) -> dict[str, torch.Tensor]:
        prompt_embeds, text_ids = pipe.encode_prompt(prompt=caption, device=device, num_images_per_prompt=1,
                                                     max_sequence_length=max_length)
        return {"prompt_embeds": prompt_embeds[0].cpu(), "pooled": torch.zeros(0),
                "text_ids": text_ids.reshape(-1, 4).cpu()}

    @staticmethod
    def text_encoders(pipe) -> tuple:
        return (pipe.text_encoder,)

    # ---- one step ----
    def noise_levels(self, u: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = latents.shape[-2] * latents.shape[-1]
        shift = self.family.training_shift(tokens)
        sigmas = (shift * u / (1 + (shift - 1) * u)).to(device=latents.device, dtype=latents.dtype)
        return sigmas, sigmas

    @staticmethod
    def weighting(sigmas: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigmas)

    def predict(self, transformer, noisy: torch.Tensor, texts: list[TextEmbedding], timesteps: torch.Tensor,
                ids: dict) -> torch.Tensor:
        batch, channels, height, width = noisy.shape
        if (height, width) not in ids:
            ids[(height, width)] = Flux2KleinPipeline._prepare_latent_ids(noisy[:1]).to(noisy.device)
        prediction = transformer(
            hidden_states=Flux2KleinPipeline._pack_latents(noisy), timestep=timesteps, guidance=None,
            encoder_hidden_states=torch.stack([t.prompt_embeds for t in texts]),
            txt_ids=texts[0].text_ids[None], img_ids=ids[(height, width)], return_dict=False,
        )[0]
        return prediction.permute(0, 2, 1).reshape(batch, channels, height, width)

    # ---- samples ----
    def sample_arguments(self, pipe, text: TextEmbedding, negative: TextEmbedding | None) -> dict:
        arguments = {"prompt_embeds": text.prompt_embeds[None], "guidance_scale": self.family.recipe.sample_guidance}
        if negative is not None:
            arguments["negative_prompt_embeds"] = negative.prompt_embeds[None]
        return arguments

    def sample_steps(self, pipe) -> int:
        distilled = bool(pipe.config.is_distilled)
        return self.family.distilled_defaults.steps if distilled else self.family.recipe.sample_steps

    @staticmethod
    def needs_negative(pipe) -> bool:
        """The base runs classifier-free guidance: its "" embedding is cached with the captions."""
        return not pipe.config.is_distilled


Layout = FluxLayout | KleinLayout


def layout_for(pipe) -> Layout:
    return KleinLayout.of(pipe) if family_of_pipeline(pipe) is KLEIN else FluxLayout.of(pipe)
