"""Build real LoRA files for the tiny Flux in tests (random but non-zero, so they change outputs)."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]


def make_tiny_lora(path: Path, seed: int = 0, rank: int = 4, magnitude: float = 0.5) -> Path:
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    return make_lora(build_tiny_flux().transformer, path, TARGETS, seed=seed, rank=rank, magnitude=magnitude)


def make_lora(transformer, path: Path, targets: list[str], seed: int = 0, rank: int = 4, alpha: float | None = None,
              magnitude: float = 0.5) -> Path:
    """A diffusers-format LoRA file (with peft metadata) for `transformer`, random N(0, magnitude^2)
    weights; the transformer (which must come without adapters) is left as it came."""
    assert not getattr(transformer, "peft_config", None), "make_lora needs a transformer without adapters"
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, init_lora_weights="gaussian")
    transformer.add_adapter(config, adapter_name="make")
    try:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in transformer.named_parameters():
                if ".make." in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * magnitude)
        state = get_peft_model_state_dict(transformer, adapter_name="make")
    finally:
        transformer.unload_lora()
    path = Path(path)
    FluxPipeline.save_lora_weights(path.parent, transformer_lora_layers=state, weight_name=path.name,
                                   transformer_lora_adapter_metadata=config.to_dict())
    return path


def make_sdxl_like_lora(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }, str(path))
    return path


def make_kohya_lora(path: Path, seed: int = 0, rank: int = 4, inner: int = 32) -> Path:
    """A kohya/sd-scripts-named LoRA for the tiny transformer's double block 0 (fused qkv)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for stream in ("img", "txt"):
        prefix = f"lora_unet_double_blocks_0_{stream}_attn_qkv"
        tensors[f"{prefix}.lora_down.weight"] = torch.randn(rank, inner, generator=g) * 0.5
        tensors[f"{prefix}.lora_up.weight"] = torch.randn(3 * inner, rank, generator=g) * 0.5
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path


def probe_transformer(transformer, side: int, tokens: int, timestep: float, seed: int) -> torch.Tensor:
    """The transformer's raw output on fixed random inputs: a cheap fingerprint of its weights."""
    config = transformer.config
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return transformer(
            hidden_states=torch.randn(1, side * side, config.in_channels, generator=g),
            encoder_hidden_states=torch.randn(1, tokens, config.joint_attention_dim, generator=g),
            pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=g),
            timestep=torch.tensor([timestep]),
            guidance=torch.tensor([3.5]),
            img_ids=FluxPipeline._prepare_latent_image_ids(1, side, side, "cpu", torch.float32),
            txt_ids=torch.zeros(tokens, 3),
            return_dict=False,
        )[0]
