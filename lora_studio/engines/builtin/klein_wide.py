"""FLUX.2 [klein] at its real widths, built in code: configs of the 4 B and 9 B checkpoints, the wide
Klein for width-dependent tests, and the full architectures on the meta device for counting.

Configs (diffusers' scripts/convert_flux2_to_diffusers.py and the published transformer configs):
  4 B transformer: 5 double + 20 single blocks, 24 heads x 128 = 3072 wide, joint attention 7680
      (3 x Qwen3-4B's 2560), 128 input channels, SwiGLU MLPs at ratio 3, four RoPE axes of 32, no
      guidance embedding; text encoder Qwen3-4B (36 layers, 2560 wide, 9728 MLP, 32 heads / 8 KV).
  9 B transformer: 8 double + 24 single blocks, 32 heads x 128 = 4096 wide, joint attention 12288
      (3 x Qwen3-8B's 4096); text encoder Qwen3-8B (36 layers, 4096 wide, 12288 MLP, 32 / 8 heads).
  VAE (both): AutoencoderKLFlux2's defaults: 32 latent channels, 128-256-512-512, quant convs.

`build_wide_klein()`: the 4 B transformer's real widths with one block of each kind, the real VAE,
and a Qwen3 that is 2560 wide where the transformer sees it (its hidden states) but slim inside (two
heads, a small MLP: nothing here trains or counts the encoder's inside) with the 28 layers the
pipeline's hidden-state picks (9, 18, 27) need. Base and distilled differ in transformer weights.
`klein_transformer_on_meta` / `klein_encoders_on_meta`: the whole 4 B or 9 B model without storage,
for the memory planner (engines/memory/need.py); `build_klein(full_size=True)` the whole model with
random weights on a GPU, for bench/gpu_suite.py (speed and memory do not depend on the values).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

from .klein import BASE_SEED, DISTILLED_SEED, KLEIN_SEED, qwen_config, qwen_tokenizer, randomise_latent_statistics
from .wide import FLUX_DEV_SCHEDULER

_FLUX2_BLOCKS = dict(patch_size=1, in_channels=128, attention_head_dim=128, timestep_guidance_channels=256,
                     mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False)
KLEIN_4B_TRANSFORMER = dict(_FLUX2_BLOCKS, num_layers=5, num_single_layers=20, num_attention_heads=24,
                            joint_attention_dim=7680)
KLEIN_9B_TRANSFORMER = dict(_FLUX2_BLOCKS, num_layers=8, num_single_layers=24, num_attention_heads=32,
                            joint_attention_dim=12288)
QWEN_VOCAB = 151936
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
                tie_word_embeddings=True)
QWEN3_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
                tie_word_embeddings=False)
FLUX2_VAE: dict = {}  # AutoencoderKLFlux2() as constructed is FLUX.2's VAE
ARCHITECTURES = {"klein-4b": (KLEIN_4B_TRANSFORMER, QWEN3_4B), "klein-9b": (KLEIN_9B_TRANSFORMER, QWEN3_8B)}
WIDE_QWEN = dict(hidden_size=2560, intermediate_size=64, num_hidden_layers=28, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=128, max_position_embeddings=512, tie_word_embeddings=True)


def klein_transformer_config(architecture: str = "klein-4b", full_size: bool = False) -> dict:
    """A Klein transformer config; with `full_size=False` one double and one single block."""
    config = dict(ARCHITECTURES[architecture][0])
    if not full_size:
        config.update(num_layers=1, num_single_layers=1)
    return config


def klein_transformer_on_meta(config: dict | str = "klein-4b") -> Flux2Transformer2DModel:
    """The whole Klein transformer of an architecture name (or a config) with no storage behind it."""
    values = ARCHITECTURES[config][0] if isinstance(config, str) else config
    with torch.device("meta"):
        return Flux2Transformer2DModel(**values)


def klein_encoders_on_meta(architecture: str = "klein-4b") -> dict[str, torch.nn.Module]:
    """The architecture's Qwen3 text encoder and the FLUX.2 VAE at full size on the meta device."""
    qwen = ARCHITECTURES[architecture][1]
    with torch.device("meta"):
        return {"text_encoder": Qwen3ForCausalLM(Qwen3Config(vocab_size=QWEN_VOCAB, **qwen)),
                "vae": AutoencoderKLFlux2(**FLUX2_VAE)}


def build_klein(distilled: bool = True, architecture: str = "klein-4b", full_size: bool = False,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Flux2KleinPipeline:
    """A Klein of `architecture` with random weights, created on `device` in `dtype`. `full_size` is the
    whole model (every block, Qwen3 at its real size: the GPU suite's); otherwise the wide Klein: the real
    transformer widths with one block of each kind and a Qwen3 slim inside (see the module docstring)."""
    tokenizer = qwen_tokenizer()
    if full_size:
        # Qwen3's real vocabulary size, so the embedding weighs what it does (our byte ids are all in it)
        qwen = Qwen3Config(vocab_size=QWEN_VOCAB, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **ARCHITECTURES[architecture][1])
    else:
        qwen = qwen_config(tokenizer, **dict(WIDE_QWEN, hidden_size=ARCHITECTURES[architecture][1]["hidden_size"]))
    state, previous = torch.random.get_rng_state(), torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            torch.manual_seed(KLEIN_SEED)
            text_encoder = Qwen3ForCausalLM(qwen)
            vae = AutoencoderKLFlux2(**FLUX2_VAE)
            with torch.no_grad():
                randomise_latent_statistics(vae, torch.Generator().manual_seed(KLEIN_SEED))
            torch.manual_seed(DISTILLED_SEED if distilled else BASE_SEED)
            transformer = Flux2Transformer2DModel(**klein_transformer_config(architecture, full_size))
    finally:
        torch.set_default_dtype(previous)
        torch.random.set_rng_state(state)
    for module in (text_encoder, vae, transformer):
        module.eval()
        module.requires_grad_(False)
    return Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae,
                              text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                              is_distilled=distilled)


def build_wide_klein(distilled: bool = True, architecture: str = "klein-4b") -> Flux2KleinPipeline:
    """Real transformer widths with one block of each kind, the real VAE, on the CPU in float32."""
    return build_klein(distilled, architecture)
