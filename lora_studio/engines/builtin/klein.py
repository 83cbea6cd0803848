"""A tiny FLUX.2 [klein] built in code: diffusers' and transformers' own classes, random weights.

`Flux2KleinPipeline` over a two-block `Flux2Transformer2DModel`, a 16-wide `Qwen3ForCausalLM` with a
Qwen2 tokenizer and chat template built here, a two-level `AutoencoderKLFlux2` and FLUX.1-dev's
`FlowMatchEulerDiscreteScheduler` config (diffusers' FLUX.2 converter builds its scheduler from that
config; the pipeline passes its own resolution shift, mu, on every call). Text-to-image and reference
edits run on a CPU in about a second; the images are noise. The VAE downsamples 8x like the real one
(four levels, 4 channels, no mid-block attention), so an image has the real model's token count and
sizes, and 1024² stays cheap on a CPU.

Shapes follow the rules the real classes enforce: the transformer's `in_channels` is 4x the VAE's
latent channels (2x2 patchify), `sum(axes_dims_rope) == attention_head_dim` (four axes: t, h, w, l),
`joint_attention_dim` is 3x Qwen3's width (the pipeline stacks hidden states 9, 18 and 27). So the
encoder has 28 layers, cheap at width 16, and every default of `encode_prompt` and `__call__` holds
as on the real model. The VAE's BatchNorm statistics, which normalise the latents, are set to random
values, so a path that forgets them changes the picture.

Base and distilled share the text encoder and VAE, as the real repos do, and differ in transformer
weights (their own seeds) and in `is_distilled`: a test can tell which one drew an image.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

from .tiny import byte_alphabet
from .wide import FLUX_DEV_SCHEDULER

KLEIN_SEED = 20260115  # text encoder and VAE, shared by both flavours
DISTILLED_SEED, BASE_SEED = 20260116, 20260117  # the transformers: different weights per flavour
QWEN_WIDTH = 16
QWEN_LAYERS = 28  # hidden states 0..28: the pipeline reads 9, 18 and 27
TINY_KLEIN_TRANSFORMER = dict(
    patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=3 * QWEN_WIDTH, timestep_guidance_channels=32, axes_dims_rope=[4, 4, 4, 4],
    guidance_embeds=False,
)
TINY_KLEIN_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=1,
    norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, sample_size=64, mid_block_add_attention=False,
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's chat layout: role turns between <|im_start|> and <|im_end|>; with thinking off, the
# assistant's turn opens with an empty think block (what Flux2KleinPipeline asks for).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer with no merges (every byte a token) and Qwen's special tokens."""
    vocab = {symbol: i for i, symbol in enumerate(byte_alphabet())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE, model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


def qwen_config(tokenizer, **widths) -> Qwen3Config:
    """A Qwen3 config for `tokenizer` (its size and special ids); `widths` default to the tiny encoder's."""
    values = dict(hidden_size=QWEN_WIDTH, intermediate_size=32, num_hidden_layers=QWEN_LAYERS, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)
    values.update(widths)
    return Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **values)


def randomise_latent_statistics(vae: AutoencoderKLFlux2, generator: torch.Generator) -> None:
    """Give the VAE's BatchNorm (which normalises the latents) random, positive-variance statistics."""
    channels = vae.bn.running_mean.shape[0]
    vae.bn.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
    vae.bn.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.25)


def _seeded(seed: int, build):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def tiny_klein_components(distilled: bool = True) -> dict:
    """Every Flux2KleinPipeline component, deterministic random weights, in eval mode, no gradients."""
    tokenizer = qwen_tokenizer()

    def shared():
        text_encoder = Qwen3ForCausalLM(qwen_config(tokenizer))
        vae = AutoencoderKLFlux2(**TINY_KLEIN_VAE)
        with torch.no_grad():
            randomise_latent_statistics(vae, torch.Generator().manual_seed(KLEIN_SEED))
        return text_encoder, vae

    text_encoder, vae = _seeded(KLEIN_SEED, shared)
    transformer = _seeded(DISTILLED_SEED if distilled else BASE_SEED,
                          lambda: Flux2Transformer2DModel(**TINY_KLEIN_TRANSFORMER))
    for module in (text_encoder, vae, transformer):
        module.eval()
        module.requires_grad_(False)
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae, text_encoder=text_encoder,
                tokenizer=tokenizer, transformer=transformer, is_distilled=distilled)


def build_tiny_klein(distilled: bool = True) -> Flux2KleinPipeline:
    """The tiny Klein: distilled (the 4-step checkpoint's stand-in) or base (what LoRAs train on)."""
    return Flux2KleinPipeline(**tiny_klein_components(distilled))
