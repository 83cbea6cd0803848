"""A tiny FLUX.1 built in code: real diffusers classes, random weights, no files, no network.

It runs every code path of the real model (packing, RoPE ids, guidance embedding, Kontext image
tokens, peft LoRA layers) on a CPU in well under a second, so the whole app and its tests work on
a machine that can never download weights. Its images are noise: nothing here draws a face.

The component shapes follow the rules FluxTransformer2DModel enforces: `in_channels` is 4x the VAE
latent channels (2x2 packing), `sum(axes_dims_rope) == attention_head_dim`, `joint_attention_dim`
is the T5 width and `pooled_projection_dim` the CLIP width.
"""
from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

TEXT_WIDTH = 32
TINY_SEED = 20240801  # weights are random but fixed, so a saved LoRA fits every tiny build
TINY_TRANSFORMER = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=TEXT_WIDTH,
    pooled_projection_dim=TEXT_WIDTH,
    axes_dims_rope=[4, 4, 8],
    guidance_embeds=True,
)


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def clip_tokenizer() -> CLIPTokenizer:
    # Byte-level alphabet with no merges: every character is a token. model_max_length must be 77,
    # or padding="max_length" pads to the tokenizer's "infinite" default.
    symbols = byte_alphabet()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> T5Tokenizer:
    # A Unigram vocabulary of single printable characters, enough to tokenize any English prompt.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_components(seed: int = TINY_SEED) -> dict:
    """Build every FluxPipeline component with deterministic random weights, in eval mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        clip_tok = clip_tokenizer()
        t5_tok = t5_tokenizer()
        clip = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=TEXT_WIDTH,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                vocab_size=len(clip_tok),
                max_position_embeddings=77,
                projection_dim=TEXT_WIDTH,
                bos_token_id=clip_tok.bos_token_id,
                eos_token_id=clip_tok.eos_token_id,
                pad_token_id=clip_tok.pad_token_id,
            )
        )
        t5 = T5EncoderModel(
            T5Config(
                d_model=TEXT_WIDTH,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                vocab_size=len(t5_tok),
                relative_attention_num_buckets=8,
                pad_token_id=t5_tok.pad_token_id,
                eos_token_id=t5_tok.eos_token_id,
                decoder_start_token_id=t5_tok.pad_token_id,
            )
        )
        transformer = FluxTransformer2DModel(**TINY_TRANSFORMER)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    finally:
        torch.random.set_rng_state(generator_state)
    # FLUX.1-dev's scheduler config, so timestep shifting follows the real model.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    for module in (clip, t5, transformer, vae):
        module.eval()  # built from configs, they start in train mode (T5 dropout = random outputs)
        module.requires_grad_(False)
    return dict(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )


def build_tiny_flux(seed: int = TINY_SEED) -> FluxPipeline:
    from ..local import TINY_ID

    pipe = FluxPipeline(**tiny_components(seed))
    pipe.register_to_config(_name_or_path=TINY_ID)  # what a LoRA trained on it records as its base
    return pipe
