"""How much GPU memory a LoRA training, or one image, needs, computed from the model's own parameter counts.

The counts come from the full architecture built on the meta device (no memory is used): FLUX.1-dev's
(wide.py) or FLUX.2 [klein] 4 B's / 9 B's (klein_wide.py), named by `architecture`, or from the loaded
transformer's config (its class, FluxTransformer2DModel or Flux2Transformer2DModel, decides which),
and are computed once per architecture. A run's peak on the GPU is the sum of:

    weights      the base weights resident while training, at the mode's bytes per parameter:
                 bf16 2 B; int8 / fp8 1 B + one fp32 scale per output row; NF4 0.5 B + one fp32
                 absmax per 64 weights (lowvram: double-quantized absmax, 1/64 B + 4/16384 B);
                 only Linear weights are quantized, the rest stays bf16. lowvram keeps only the
                 layers outside the blocks, the quantization state and two blocks on the GPU.
    LoRA         rank x (in + out) per targeted linear (the recipe's targets), each weight fp32 (4 B)
                 + its gradient (4 B) + AdamW's two moments (8-bit: 2 B; fp32: 8 B).
    activations  what autograd keeps for the backward pass, per block: ACTIVATION_ELEMENTS per token
                 per unit of width (measured on each family's wide model; tests/test_memory_need.py and
                 tests/test_klein_memory.py measure it again), ~2.8 B per element under bf16 autocast.
                 Tokens = (side / 16)^2 image tokens + 512 text tokens (T5's or Qwen3's). Without checkpointing every block's set is kept; with it only each
                 block's input (bf16) plus one block recomputed with its gradients.
    runtime      CUDA context, kernel workspaces and allocator slack (RUNTIME_BYTES), plus one
                 dequantized layer for quantized bases.

The caching phase before the loop (VAE + text encoders on the GPU, the transformer waiting on the
CPU; for a quantized base the big text encoder, T5 or Qwen3, runs block by block) is planned too and
the need is the larger of the two phases. RUNTIME_BYTES is the one figure not
derived from the model: with it, the totals land on the public measurements (diffusers' flux-qlora
blog, 512x768, rank 4: NF4 ~9 GB, bf16 LoRA with checkpointing ~26 GB), which the tests keep as checks.
GB here is 10^9 bytes (lora_studio/sizes.py), the unit of those figures.

An image (`inference_need`, what the speed settings' `auto` sizes against) needs the transformer's
weights in their format, the text encoders and VAE in bf16, and working memory: one block's
transient tensors (INFERENCE_ELEMENTS per token per unit of width), the VAE decoding the full-size
image (DECODE_ELEMENTS per pixel per channel of its full-resolution blocks) and the CUDA runtime.
Those two factors are chosen so FLUX.1-dev at 1024² lands on the ~4 GB of working memory public
measurements show; the rest is counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ...sizes import GB

RUNTIME_BYTES = 1.5 * GB
TEXT_TOKENS = 512  # T5 tokens per caption or prompt (training.dataset.MAX_SEQUENCE_LENGTH, the pipeline's too)
PIXELS_PER_TOKEN = 16  # VAE downscale 8 x 2x2 latent packing
ACTIVATION_BYTES = 2.8  # bytes per saved element under bf16 autocast (bf16 mostly, fp32 norms and RoPE)
# Elements autograd saves per token per unit of width (hidden size) in one block, with a LoRA on the
# attention only (False) or on the MLPs too (True); measured on the wide model in fp32.
ACTIVATION_ELEMENTS = {("double", False): 13.2, ("double", True): 18.2,
                       ("single", False): 12.0, ("single", True): 17.1}
# The same on the wide Klein: SwiGLU MLPs keep more, and a single block's fused input/output carry the
# LoRA with or without the MLPs (engines/family: its single-block targets are attention targets).
KLEIN_ACTIVATION_ELEMENTS = {("double", False): 18.3, ("double", True): 22.3,
                             ("single", False): 21.1, ("single", True): 21.1}
ACTIVATIONS_BY_FAMILY = {"flux1": ACTIVATION_ELEMENTS, "flux2-klein": KLEIN_ACTIVATION_ELEMENTS}
KLEIN_CLASS = "Flux2Transformer2DModel"
ARCHITECTURES = ("flux1-dev", "klein-4b", "klein-9b")
BOUNDARY_BYTES = 2  # a checkpointed block keeps only its bf16 input
WEIGHT_FORMATS = ("bf16", "8bit", "fp8", "nf4", "nf4-offloaded")
INFERENCE_ELEMENTS = 20  # one block's live bf16 tensors at inference: norms, q/k/v, MLP, residuals
DECODE_ELEMENTS = 7  # the VAE decoder's live tensors per pixel and full-resolution channel (bf16)
INFERENCE_BYTES = 2  # bf16
QKV_NAMES = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")  # what fused QKV copies


@dataclass(frozen=True)
class LinearCount:
    """Parameter elements of a module tree: Linear weights (quantizable), their rows, everything else."""

    linear: int = 0
    rows: int = 0
    other: int = 0

    def __add__(self, other: "LinearCount") -> "LinearCount":
        return LinearCount(self.linear + other.linear, self.rows + other.rows, self.other + other.other)

    @property
    def total(self) -> int:
        return self.linear + self.other


@dataclass(frozen=True)
class TransformerCounts:
    family: str  # engines/family key: which activation table applies
    hidden: int
    double_blocks: int
    single_blocks: int
    outside: LinearCount  # embedders, final norm and projection
    blocks: LinearCount  # all blocks together
    largest_block: LinearCount
    largest_linear: int  # elements of the biggest Linear weight (dequantized one at a time)
    lora_per_rank: dict  # train_mlp -> LoRA parameters per unit of rank
    qkv_linear: int = 0  # elements of the q/k/v weights of both streams (fused QKV copies them)

    @property
    def total(self) -> LinearCount:
        return self.outside + self.blocks


@dataclass(frozen=True)
class EncoderCounts:
    whole: int  # VAE + text encoders (FLUX.1: CLIP + T5; Klein: Qwen3)
    text_largest_block: int  # of the big text encoder (T5 / Qwen3), which a quantized run streams
    text_blocks: int  # all its blocks together
    vae_width: int = 128  # channels of the VAE decoder's full-resolution blocks


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes one training run needs on the GPU, by part; `total` is what the plan compares to the GPU."""

    weights: float
    lora: float
    activations: float
    runtime: float
    encoding: float  # the caching phase's peak
    resolution: int

    @property
    def training(self) -> float:
        return self.weights + self.lora + self.activations + self.runtime

    @property
    def total(self) -> float:
        return max(self.training, self.encoding)

    def describe(self) -> str:
        text = (f"weights {self.weights / GB:.1f} GB + LoRA and optimizer {self.lora / GB:.1f} GB + activations "
                f"{self.activations / GB:.1f} GB + CUDA runtime {self.runtime / GB:.1f} GB = "
                f"{self.training / GB:.1f} GB at {self.resolution} px")
        if self.encoding > self.training:
            text += f"; caching the text embeddings peaks higher, at {self.encoding / GB:.1f} GB"
        return text


def _count(module) -> LinearCount:
    import torch

    linear = rows = other = 0
    for child in module.modules():
        for name, param in child.named_parameters(recurse=False):
            if isinstance(child, torch.nn.Linear) and name == "weight":
                linear += param.numel()
                rows += param.shape[0]
            else:
                other += param.numel()
    return LinearCount(linear, rows, other)


def _config_key(config: dict | None) -> tuple | None:
    if config is None:
        return None
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()
                        if not k.startswith("_")))


def is_klein_config(config: dict | None) -> bool:
    """A Flux2 transformer config (by its class name, or the arguments only Flux2's has)."""
    return bool(config) and (config.get("_class_name") == KLEIN_CLASS or "timestep_guidance_channels" in config)


def transformer_counts(config: dict | None = None, architecture: str = "flux1-dev") -> TransformerCounts:
    """Counts of `config`'s transformer, or of the named full architecture, built on the meta device once."""
    if config is None and architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    klein = is_klein_config(config) if config is not None else architecture.startswith("klein")
    return _transformer_counts(_config_key(config), architecture if config is None else None, klein)


@lru_cache(maxsize=8)
def _transformer_counts(key: tuple | None, architecture: str | None, klein: bool) -> TransformerCounts:
    import inspect

    import torch

    from .. import flux_stack
    from ..lora import target_modules

    flux_stack.load()  # the launch's warm-up runs this beside the first job
    from diffusers import Flux2Transformer2DModel, FluxTransformer2DModel

    from ..builtin import full_transformer_on_meta, klein_transformer_on_meta

    config = None
    if key is not None:
        cls = Flux2Transformer2DModel if klein else FluxTransformer2DModel
        accepted = inspect.signature(cls.__init__).parameters
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in key if k in accepted}
    if klein:
        model = klein_transformer_on_meta(config or architecture)
    else:
        model = full_transformer_on_meta(config)
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    block_counts = [_count(block) for block in blocks]
    outside = _count(model) + LinearCount(*(-sum(getattr(c, f) for c in block_counts)
                                            for f in ("linear", "rows", "other")))
    named = dict(model.named_modules())

    def lora_per_rank(train_mlp: bool) -> int:
        return sum(named[n].in_features + named[n].out_features for n in target_modules(model, train_mlp))

    return TransformerCounts(
        family="flux2-klein" if klein else "flux1",
        hidden=model.config.num_attention_heads * model.config.attention_head_dim,
        double_blocks=len(model.transformer_blocks),
        single_blocks=len(model.single_transformer_blocks),
        outside=outside,
        blocks=sum(block_counts, LinearCount()),
        largest_block=max(block_counts, key=lambda c: c.total),
        largest_linear=max(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        lora_per_rank={False: lora_per_rank(False), True: lora_per_rank(True)},
        qkv_linear=sum(m.weight.numel() for n, m in named.items()
                       if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in QKV_NAMES),
    )


def encoder_counts(pipe=None, architecture: str = "flux1-dev") -> EncoderCounts:
    """The loaded pipeline's VAE and text encoders (never quantized here), or the named architecture's
    on the meta device."""
    if pipe is None:
        return _architecture_encoders(architecture)
    names = ("vae", "text_encoder", "text_encoder_2")
    return _encoders({name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None})


@lru_cache(maxsize=4)
def _architecture_encoders(architecture: str) -> EncoderCounts:
    from ..builtin import full_encoders_on_meta, klein_encoders_on_meta

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return _encoders(klein_encoders_on_meta(architecture) if architecture.startswith("klein")
                     else full_encoders_on_meta())


def _encoders(modules: dict) -> EncoderCounts:
    whole = sum(p.numel() for m in modules.values() for p in m.parameters())
    big = modules.get("text_encoder_2", modules.get("text_encoder"))  # T5 beside CLIP, or Klein's Qwen3
    blocks = [sum(p.numel() for p in b.parameters()) for b in text_block_list(big)] if big is not None else []
    widths = getattr(getattr(modules.get("vae"), "config", None), "block_out_channels", None) or (128,)
    return EncoderCounts(whole=whole, text_largest_block=max(blocks, default=0), text_blocks=sum(blocks),
                         vae_width=int(widths[0]))


def t5_block_list(t5) -> list:
    encoder = getattr(t5, "encoder", None)
    return list(getattr(encoder, "block", None) or [])


def text_block_list(text_encoder) -> list:
    """The repeated blocks of a text encoder: T5's `encoder.block` or Qwen3's `model.layers`."""
    inner = getattr(text_encoder, "model", None)
    return t5_block_list(text_encoder) or list(getattr(inner, "layers", None) or [])


def weight_bytes(count: LinearCount, fmt: str) -> float:
    """Bytes of `count`'s parameters stored in `fmt` (non-Linear parameters stay bf16)."""
    if fmt == "bf16":
        return 2.0 * count.total
    if fmt in ("8bit", "fp8"):
        return count.linear + 4.0 * count.rows + 2.0 * count.other
    if fmt == "nf4":
        return count.linear * (0.5 + 4 / 64) + 2.0 * count.other
    if fmt == "nf4-offloaded":  # what stays on the GPU of an offloaded block: its quantization state
        return count.linear * (1 / 64 + 4 / (64 * 256))
    raise ValueError(f"unknown weight format {fmt!r}")


def activation_bytes(counts: TransformerCounts, resolution: int, checkpointing: bool, train_mlp: bool) -> float:
    tokens = (resolution / PIXELS_PER_TOKEN) ** 2 + TEXT_TOKENS
    width = tokens * counts.hidden
    elements = ACTIVATIONS_BY_FAMILY[counts.family]
    double = elements[("double", train_mlp)] * width * ACTIVATION_BYTES
    single = elements[("single", train_mlp)] * width * ACTIVATION_BYTES
    largest = max(double if counts.double_blocks else 0.0, single if counts.single_blocks else 0.0)
    if checkpointing:
        boundaries = (counts.double_blocks + counts.single_blocks) * width * BOUNDARY_BYTES
        return boundaries + 2 * largest  # one block recomputed, plus its gradients
    return counts.double_blocks * double + counts.single_blocks * single + largest


def lora_bytes(counts: TransformerCounts, rank: int, train_mlp: bool, optimizer_8bit: bool) -> float:
    parameters = counts.lora_per_rank[train_mlp] * rank
    return parameters * (4 + 4 + (2 if optimizer_8bit else 8))


def training_need(
    weights_format: str,
    offload_blocks: bool,
    checkpointing: bool,
    optimizer_8bit: bool,
    resolution: int,
    rank: int = 16,
    train_mlp: bool = True,
    transformer_config: dict | None = None,
    pipe=None,
    architecture: str = "flux1-dev",
) -> MemoryNeed:
    """The bytes a run in this configuration needs on the GPU (see the module docstring): for the loaded
    `pipe` and its `transformer_config` when given, else for the named full architecture."""
    counts = transformer_counts(transformer_config, architecture)
    if offload_blocks:
        weights = (weight_bytes(counts.outside, weights_format) + weight_bytes(counts.blocks, "nf4-offloaded")
                   + 2 * weight_bytes(counts.largest_block, weights_format))
    else:
        weights = weight_bytes(counts.total, weights_format)
    quantized = weights_format != "bf16"
    runtime = RUNTIME_BYTES + (2.0 * counts.largest_linear if quantized else 0.0)
    encoders = encoder_counts(pipe, architecture)
    if quantized:  # the big text encoder runs block by block while caching (lease.PipelineLease.encoders_on)
        on_gpu = encoders.whole - encoders.text_blocks + encoders.text_largest_block
    else:
        on_gpu = encoders.whole
    return MemoryNeed(
        weights=weights,
        lora=lora_bytes(counts, rank, train_mlp, optimizer_8bit),
        activations=activation_bytes(counts, resolution, checkpointing, train_mlp),
        runtime=runtime,
        encoding=2.0 * on_gpu + RUNTIME_BYTES,
        resolution=resolution,
    )


@dataclass(frozen=True)
class InferenceNeed:
    """Bytes one image needs on the GPU, by part, plus what two speed settings add."""

    transformer: float  # its weights in the loaded format
    encoders: float  # VAE + CLIP + T5 in bf16
    working: float  # one image's transient tensors, VAE decoding and the CUDA runtime
    fused_extra: float  # fused QKV: the concatenated q/k/v copies (bf16; the unfused ones stay)
    batch_extra: float  # one more Kontext edit in a call (its sequence carries the reference's tokens)

    @property
    def total(self) -> float:
        return self.transformer + self.encoders + self.working


def inference_need(weights_format: str = "bf16", resolution: int = 1024,
                   transformer_config: dict | None = None, pipe=None, architecture: str = "flux1-dev") -> InferenceNeed:
    """What an image at `resolution` needs with the transformer in `weights_format` (the named full
    architecture unless `transformer_config` and the loaded `pipe` say otherwise); see the module docstring."""
    counts = transformer_counts(transformer_config, architecture)
    encoders = encoder_counts(pipe, architecture)
    image_tokens = (resolution / PIXELS_PER_TOKEN) ** 2

    def block(tokens: float) -> float:
        return tokens * counts.hidden * INFERENCE_ELEMENTS * INFERENCE_BYTES

    decode = resolution**2 * encoders.vae_width * DECODE_ELEMENTS * INFERENCE_BYTES
    return InferenceNeed(
        transformer=weight_bytes(counts.total, weights_format),
        encoders=2.0 * encoders.whole,
        working=block(image_tokens + TEXT_TOKENS) + decode + RUNTIME_BYTES,
        fused_extra=2.0 * counts.qkv_linear,
        batch_extra=block(2 * image_tokens + TEXT_TOKENS) + decode,
    )


def download_bytes(architecture: str, transformer_only: bool = False) -> float:
    """The bytes of a checkpoint's weights as its repo holds them (bf16 safetensors): the transformer, and
    unless `transformer_only` the text encoders and VAE, counted from the architecture on the meta device."""
    total = transformer_counts(architecture=architecture).total.total
    if not transformer_only:
        total += encoder_counts(architecture=architecture).whole
    return 2.0 * total
