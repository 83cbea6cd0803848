"""FLUX.1-dev at its real widths, built in code: the "wide" Flux for everything that depends on width.

Tiny Flux proves the plumbing, but LoRA key layouts, the kohya/BFL export (diffusers' loader
hard-codes 3072-wide single blocks), memory plans and speed all depend on the real sizes. This module
holds FLUX.1-dev's published configs and builds:

- `build_wide_flux()`: every component at its real width (transformer 3072 wide, 24 heads x 128,
  joint attention 4096, pooled 768, 64 input channels, guidance embedding; the real 16-channel VAE;
  a 4096-wide T5 with 64 heads; CLIP-L width) but one double and one single block and one text-encoder
  layer, so it runs on a CPU (the transformer is ~546 M parameters).
- `build_flux(...)` with `full_size=True`: the whole FLUX.1-dev architecture (19 double + 38 single
  blocks, T5-XXL's 24 layers), random weights, for the GPU suite: speed and memory do not depend on
  the values. `full_transformer_on_meta()` and `full_encoders_on_meta()` give its parameter counts
  without using any memory (the memory planner counts from them).

Random weights, tokenizers built in code (the tiny ones): nothing is downloaded.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from .tiny import clip_tokenizer, t5_tokenizer

WIDE_SEED = 20240802

# black-forest-labs/FLUX.1-dev, transformer/config.json
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
# vae/config.json
FLUX_DEV_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", sample_size=1024, scaling_factor=0.3611,
    shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
    mid_block_add_attention=True,
)
# text_encoder_2 (T5 v1.1 XXL encoder) and text_encoder (CLIP ViT-L/14 text tower)
FLUX_DEV_T5 = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24,
                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0)
FLUX_DEV_CLIP = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     projection_dim=768, max_position_embeddings=77, hidden_act="quick_gelu")
T5_XXL_VOCAB, CLIP_L_VOCAB = 32128, 49408  # the real tokenizers' sizes (the built-in ones are smaller)
FLUX_DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                          base_image_seq_len=256, max_image_seq_len=4096)


def transformer_config(full_size: bool = False) -> dict:
    """FLUX.1-dev's transformer config; with `full_size=False` one double and one single block."""
    config = dict(FLUX_DEV_TRANSFORMER)
    if not full_size:
        config.update(num_layers=1, num_single_layers=1)
    return config


def full_transformer_on_meta(config: dict | None = None) -> FluxTransformer2DModel:
    """The whole FLUX.1-dev transformer (or one of `config`) with no storage behind it: for counting."""
    with torch.device("meta"):
        return FluxTransformer2DModel(**(config or FLUX_DEV_TRANSFORMER))


def full_encoders_on_meta() -> dict[str, torch.nn.Module]:
    """FLUX.1-dev's CLIP-L, T5-XXL encoder and VAE at full size on the meta device: for counting."""
    with torch.device("meta"):
        return {
            "text_encoder": CLIPTextModel(CLIPTextConfig(**FLUX_DEV_CLIP, vocab_size=CLIP_L_VOCAB)),
            "text_encoder_2": T5EncoderModel(T5Config(**FLUX_DEV_T5, vocab_size=T5_XXL_VOCAB)),
            "vae": AutoencoderKL(**FLUX_DEV_VAE),
        }


def build_flux(full_size: bool = False, seed: int = WIDE_SEED, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> FluxPipeline:
    """FLUX.1-dev's architecture with random weights, created directly on `device` in `dtype`."""
    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype) if dtype.is_floating_point else None
        with torch.device(device):
            t5 = T5EncoderModel(T5Config(
                **{**FLUX_DEV_T5, "num_layers": FLUX_DEV_T5["num_layers"] if full_size else 1},
                vocab_size=len(t5_tok), pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id,
                decoder_start_token_id=t5_tok.pad_token_id))
            clip = CLIPTextModel(CLIPTextConfig(
                **{**FLUX_DEV_CLIP, "num_hidden_layers": FLUX_DEV_CLIP["num_hidden_layers"] if full_size else 1},
                vocab_size=len(clip_tok), bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
                pad_token_id=clip_tok.pad_token_id))
            transformer = FluxTransformer2DModel(**transformer_config(full_size))
            vae = AutoencoderKL(**FLUX_DEV_VAE)
    finally:
        torch.set_default_dtype(previous)
        torch.random.set_rng_state(state)
    for module in (clip, t5, transformer, vae):
        module.eval()
        module.requires_grad_(False)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae, text_encoder=clip,
        tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer,
    )


def build_wide_flux(seed: int = WIDE_SEED) -> FluxPipeline:
    """Real widths, one block of each kind, on the CPU in float32."""
    from ..local import WIDE_ID

    pipe = build_flux(full_size=False, seed=seed)
    pipe.register_to_config(_name_or_path=WIDE_ID)  # what a LoRA trained on it records as its base
    return pipe
