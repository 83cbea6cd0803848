"""The two model families, FLUX.1 and FLUX.2 [klein], as data: what the rest of the app asks instead
of testing for FLUX.1.

A family is what differs between the architectures; what differs between checkpoints of one family
(4 B or 9 B, base or distilled, the licence, gated or open) is in checkpoints.py. Nothing here imports
torch: the Settings page, the catalogue and the CLI read families without loading a model.

FLUX.1 (`FluxPipeline`): a 12 B guidance-distilled transformer under CLIP-L + T5-XXL and a 16-channel
VAE. It cannot edit, so the character sheet runs FLUX.1-Kontext-dev's transformer, swapped under the
same encoders (engines/local/kontext.py).

FLUX.2 [klein] (`Flux2KleinPipeline`, diffusers 0.42): one checkpoint does text-to-image and reference
edits, so the sheet is the same pipeline with the reference image in `image=` and nothing swaps.
  - components: `Flux2Transformer2DModel` (double-stream blocks with SwiGLU MLPs `ff.linear_in/out`,
    single-stream blocks whose attention and MLP share one fused input `attn.to_qkv_mlp_proj` and one
    output `attn.to_out`; no guidance embedding), `Qwen3ForCausalLM` + its Qwen2 tokenizer (chat
    template, `enable_thinking=False`), `AutoencoderKLFlux2` (32 latent channels, a BatchNorm whose
    running statistics normalise the latents), `FlowMatchEulerDiscreteScheduler`; `is_distilled` in
    model_index.json says whether the transformer is step-distilled.
  - text: `encode_prompt` stacks Qwen3's hidden states 9, 18 and 27 (of 36 layers) per token, so the
    transformer's `joint_attention_dim` is 3x Qwen3's width (4 B: 3 x 2560, 9 B: 3 x 4096); 512 tokens,
    padded; no pooled vector. Text ids are 4-D (t, h, w, l) = (0, 0, 0, token).
  - latents: VAE latents (8x down) are patchified 2x2 into 4 x 32 = 128 channels, normalised by the
    VAE's BatchNorm mean/std, then flattened to tokens without further packing; image ids are
    (0, row, column, 0) and each reference image's tokens follow with t = 10, 20, ... so one forward
    sees [noisy latents, reference latents] and the prediction is cut back to the first part.
  - schedule: sigmas linspace(1, 1/N, N) shifted by an empirical mu of (image tokens, steps), computed by
    the pipeline for each call; guidance is CFG (a second pass with "") and only on the base model.
  - defaults: distilled 4 steps without CFG (guidance is ignored); base 50 steps at guidance 4.0 (the
    model card's example, musubi-tuner's table); sizes multiples of 16 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Defaults:
    """Steps and guidance for text-to-image and for a character-sheet edit."""

    steps: int
    guidance: float
    sheet_steps: int
    sheet_guidance: float


@dataclass(frozen=True)
class LoraTargets:
    """Module names inside a block (after `transformer_blocks.{i}.` or `single_transformer_blocks.{i}.`)
    that get a LoRA: attention always, MLPs when asked. A Klein single block's input and output are
    attention and MLP at once, so they are attention targets."""

    double_attention: tuple[str, ...]
    double_mlp: tuple[str, ...]
    single_attention: tuple[str, ...]
    single_mlp: tuple[str, ...]

    def double(self, train_mlp: bool) -> tuple[str, ...]:
        return self.double_attention + (self.double_mlp if train_mlp else ())

    def single(self, train_mlp: bool) -> tuple[str, ...]:
        return self.single_attention + (self.single_mlp if train_mlp else ())


@dataclass(frozen=True)
class Latents:
    """How images become transformer tokens: what the trainer's packing and position ids follow."""

    vae_channels: int
    pixels_per_token: int  # VAE downscale x 2x2 patches
    packing: str  # "pack-2x2": FluxPipeline._pack_latents; "patchify": Flux2 _patchify_latents + _pack_latents
    position_axes: int  # 3 (FLUX.1: 0, row, col) or 4 (Klein: t, row, col, l)
    normalise: str  # "shift-scale" (VAE config) | "batch-norm" (the VAE's running statistics)
    reference_t_step: int = 0  # Klein: reference image k sits at t = step * (k + 1)


@dataclass(frozen=True)
class TextEncoding:
    """The pipeline's own `encode_prompt`, and what it gives back."""

    max_tokens: int
    hidden_layers: tuple[int, ...]  # Klein: the Qwen3 hidden states stacked (FLUX.1: ())
    pooled: bool  # FLUX.1's CLIP pooled vector


@dataclass(frozen=True)
class TrainingRecipe:
    """The flow-matching recipe in words and numbers (the loop is training/flow_matching.py's).

    `timesteps` "logit-normal": u ~ sigmoid(N(0, 1)). `shift` None: sigma = u through the scheduler's
    training table (FLUX.1, as diffusers' FLUX.1 script); a (base, max) pair: sigma = s*u / (1 + (s-1)*u)
    with s = exp(mu), mu linear in the image tokens from `base` at 256 to `max` at 4096 (musubi-tuner's
    "flux2_shift", FLUX.1's resolution rule applied to Klein's token count), so large images train at
    the noise levels their sampling spends its steps on. `loss_weighting` as diffusers' training_utils
    names it. The target is always noise - latents. Samples while training are drawn with
    `sample_steps` at `sample_guidance` (on an undistilled Klein base: CFG, as its own card says)."""

    timesteps: str
    shift: tuple[float, float] | None
    loss_weighting: str
    train_guidance: float | None  # the guidance embedding's input (FLUX.1), None: no guidance input
    sample_steps: int = 20
    sample_guidance: float = 3.5


@dataclass(frozen=True)
class Family:
    key: str
    title: str
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name`s of this family
    transformer_class: str
    sheet: str  # "kontext-transformer" | "reference-edit"
    base_defaults: Defaults  # undistilled (Klein base) / the only one (FLUX.1)
    distilled_defaults: Defaults
    lora_targets: LoraTargets
    latents: Latents
    text: TextEncoding
    recipe: TrainingRecipe
    guidance_embeds: bool
    export_formats: tuple[str, ...]  # "diffusers" (load_lora_weights) and "kohya" (training/kohya_export.LAYOUTS)
    speed_settings: tuple[str, ...]  # engines/speed settings known to work on this family
    architectures: tuple[str, ...]  # memory-plan inputs: engines/builtin full-size configs by name

    def defaults(self, distilled: bool) -> Defaults:
        return self.distilled_defaults if distilled else self.base_defaults

    def training_shift(self, image_tokens: int) -> float | None:
        """The shift s = exp(mu) for an image of `image_tokens` tokens (None: no shift, see TrainingRecipe)."""
        if self.recipe.shift is None:
            return None
        base, top = self.recipe.shift
        return math.exp(base + (top - base) * (image_tokens - 256) / (4096 - 256))

    def training_sigma(self, u: float, image_tokens: int) -> float:
        """The noise level a training step uses for a sample u in (0, 1) (see TrainingRecipe)."""
        s = self.training_shift(image_tokens)
        return u if s is None else s * u / (1 + (s - 1) * u)


_FLUX1_DEFAULTS = Defaults(steps=28, guidance=3.5, sheet_steps=28, sheet_guidance=2.5)

FLUX1 = Family(
    key="flux1",
    title="FLUX.1",
    pipeline_classes=("FluxPipeline", "FluxKontextPipeline"),
    transformer_class="FluxTransformer2DModel",
    sheet="kontext-transformer",
    base_defaults=_FLUX1_DEFAULTS,
    distilled_defaults=_FLUX1_DEFAULTS,
    lora_targets=LoraTargets(
        double_attention=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                          "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
        double_mlp=("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
        single_attention=("attn.to_q", "attn.to_k", "attn.to_v"),
        single_mlp=("proj_mlp", "proj_out"),
    ),
    latents=Latents(vae_channels=16, pixels_per_token=16, packing="pack-2x2", position_axes=3,
                    normalise="shift-scale"),
    text=TextEncoding(max_tokens=512, hidden_layers=(), pooled=True),
    recipe=TrainingRecipe(timesteps="logit-normal", shift=None, loss_weighting="logit_normal", train_guidance=1.0),
    guidance_embeds=True,
    export_formats=("diffusers", "kohya"),
    speed_settings=("fuse_qkv", "compile", "quantize", "group_offload", "batch_edits", "first_block_cache"),
    architectures=("flux1-dev",),
)

KLEIN = Family(
    key="flux2-klein",
    title="FLUX.2 [klein]",
    pipeline_classes=("Flux2KleinPipeline",),
    transformer_class="Flux2Transformer2DModel",
    sheet="reference-edit",
    base_defaults=Defaults(steps=50, guidance=4.0, sheet_steps=50, sheet_guidance=4.0),
    distilled_defaults=Defaults(steps=4, guidance=1.0, sheet_steps=4, sheet_guidance=1.0),
    lora_targets=LoraTargets(
        double_attention=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                          "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
        double_mlp=("ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out"),
        single_attention=("attn.to_qkv_mlp_proj", "attn.to_out"),
        single_mlp=(),
    ),
    latents=Latents(vae_channels=32, pixels_per_token=16, packing="patchify", position_axes=4,
                    normalise="batch-norm", reference_t_step=10),
    text=TextEncoding(max_tokens=512, hidden_layers=(9, 18, 27), pooled=False),
    recipe=TrainingRecipe(timesteps="logit-normal", shift=(0.5, 1.15), loss_weighting="none", train_guidance=None,
                          sample_steps=28, sample_guidance=4.0),
    guidance_embeds=False,
    export_formats=("diffusers", "kohya"),
    # first_block_cache is left out until it is tested on Flux2Transformer2DModel
    speed_settings=("fuse_qkv", "compile", "quantize", "group_offload", "batch_edits"),
    architectures=("klein-4b", "klein-9b"),
)

FAMILIES = (FLUX1, KLEIN)


def family_named(key: str) -> Family:
    for family in FAMILIES:
        if family.key == key:
            return family
    raise KeyError(f"no model family {key!r}; known: {', '.join(f.key for f in FAMILIES)}")
