"""Helpers for FLUX.2 [klein] tests: one fixed transformer forward, and its LoRA update by hand."""
from __future__ import annotations

import torch
from diffusers import Flux2KleinPipeline


def probe_klein(transformer, side: int = 4, tokens: int = 6, timestep: float = 0.4, seed: int = 3,
                references: int = 0) -> torch.Tensor:
    """The transformer's prediction for fixed random latents and text (and `references` reference images
    of the same size, placed as the pipeline places them), in float32."""
    config = transformer.config
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, config.in_channels, side, side, generator=g)
    text = torch.randn(1, tokens, config.joint_attention_dim, generator=g)
    hidden = Flux2KleinPipeline._pack_latents(latents)
    ids = Flux2KleinPipeline._prepare_latent_ids(latents)
    if references:
        refs = [torch.randn(1, config.in_channels, side, side, generator=g) for _ in range(references)]
        hidden = torch.cat([hidden] + [Flux2KleinPipeline._pack_latents(r) for r in refs], dim=1)
        ids = torch.cat([ids, Flux2KleinPipeline._prepare_image_ids(refs)], dim=1)
    with torch.no_grad():
        out = transformer(hidden_states=hidden, encoder_hidden_states=text, timestep=torch.tensor([timestep]),
                          guidance=None, txt_ids=Flux2KleinPipeline._prepare_text_ids(text), img_ids=ids,
                          return_dict=False)[0]
    return out[:, : side * side].float()


def merged_copy(transformer_factory, state: dict[str, torch.Tensor], scale: float = 1.0):
    """A fresh transformer with `scale * B @ A` added to each LoRA'd weight by hand (diffusers names,
    with or without the "transformer." prefix)."""
    transformer = transformer_factory()
    weights = dict(transformer.named_parameters())
    with torch.no_grad():
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            module = key.removesuffix(".lora_A.weight").removeprefix("transformer.")
            b = state[key.replace(".lora_A.", ".lora_B.")]
            weights[f"{module}.weight"] += scale * (b.float() @ a.float())
    return transformer


def klein_forward(transformer, side: int, tokens: int, generator: torch.Generator):
    """A Klein forward with inputs that need gradients (for tests/activation_probe.py)."""
    config = transformer.config
    latents = torch.randn(1, config.in_channels, side, side, generator=generator)
    text = torch.randn(1, tokens, config.joint_attention_dim, generator=generator).requires_grad_()
    return transformer(hidden_states=Flux2KleinPipeline._pack_latents(latents).requires_grad_(),
                       encoder_hidden_states=text, timestep=torch.tensor([0.4]), guidance=None,
                       txt_ids=Flux2KleinPipeline._prepare_text_ids(text),
                       img_ids=Flux2KleinPipeline._prepare_latent_ids(latents), return_dict=False)
