"""How much GPU memory a LoRA training needs, computed from the model's own parameter counts.

The counts come from the FLUX.1-dev architecture built on the meta device (no memory is used; see
wide.py), or from the loaded transformer's config, and are computed once per architecture. A run's
peak on the GPU is the sum of:

    weights      the base weights resident while training, at the mode's bytes per parameter:
                 bf16 2 B; int8 / fp8 1 B + one fp32 scale per output row; NF4 0.5 B + one fp32
                 absmax per 64 weights (lowvram: double-quantized absmax, 1/64 B + 4/16384 B);
                 only Linear weights are quantized, the rest stays bf16. lowvram keeps only the
                 layers outside the blocks, the quantization state and two blocks on the GPU.
    LoRA         rank x (in + out) per targeted linear (the recipe's targets), each weight fp32 (4 B)
                 + its gradient (4 B) + AdamW's two moments (8-bit: 2 B; fp32: 8 B).
    activations  what autograd keeps for the backward pass, per block: ACTIVATION_ELEMENTS per token
                 per unit of width (measured on the wide model; tests/test_memory_need.py measures it
                 again), ~2.8 B per element under bf16 autocast. Tokens = (side / 16)^2 image tokens +
                 512 text tokens. Without checkpointing every block's set is kept; with it only each
                 block's input (bf16) plus one block recomputed with its gradients.
    runtime      CUDA context, kernel workspaces and allocator slack (RUNTIME_BYTES), plus one
                 dequantized layer for quantized bases.

The caching phase before the loop (VAE + text encoders on the GPU, the transformer waiting on the
CPU) is planned too and the need is the larger of the two phases. RUNTIME_BYTES is the one figure not
derived from the model: with it, the totals land on the public measurements (diffusers' flux-qlora
blog, 512x768, rank 4: NF4 ~9 GB, bf16 LoRA with checkpointing ~26 GB), which the tests keep as checks.
GB here is 10^9 bytes (lora_studio/sizes.py), the unit of those figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ...sizes import GB

RUNTIME_BYTES = 1.5 * GB
TEXT_TOKENS = 512  # T5 tokens per caption while training (training.dataset.MAX_SEQUENCE_LENGTH)
PIXELS_PER_TOKEN = 16  # VAE downscale 8 x 2x2 latent packing
ACTIVATION_BYTES = 2.8  # bytes per saved element under bf16 autocast (bf16 mostly, fp32 norms and RoPE)
# Elements autograd saves per token per unit of width (hidden size) in one block, with a LoRA on the
# attention only (False) or on the MLPs too (True); measured on the wide model in fp32.
ACTIVATION_ELEMENTS = {("double", False): 13.2, ("double", True): 18.2,
                       ("single", False): 12.0, ("single", True): 17.1}
BOUNDARY_BYTES = 2  # a checkpointed block keeps only its bf16 input
WEIGHT_FORMATS = ("bf16", "8bit", "fp8", "nf4", "nf4-offloaded")


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
    hidden: int
    double_blocks: int
    single_blocks: int
    outside: LinearCount  # embedders, final norm and projection
    blocks: LinearCount  # all blocks together
    largest_block: LinearCount
    largest_linear: int  # elements of the biggest Linear weight (dequantized one at a time)
    lora_per_rank: dict  # train_mlp -> LoRA parameters per unit of rank

    @property
    def total(self) -> LinearCount:
        return self.outside + self.blocks


@dataclass(frozen=True)
class EncoderCounts:
    whole: int  # VAE + CLIP + T5 parameters
    t5_largest_block: int
    t5_blocks: int  # all T5 blocks together


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


def transformer_counts(config: dict | None = None) -> TransformerCounts:
    """Counts of FLUX.1-dev's transformer (or of `config`'s), built on the meta device once."""
    return _transformer_counts(_config_key(config))


@lru_cache(maxsize=8)
def _transformer_counts(key: tuple | None) -> TransformerCounts:
    import inspect

    import torch

    from .. import flux_stack
    from ..lora import target_modules

    flux_stack.load()  # the launch's warm-up runs this beside the first job
    from diffusers import FluxTransformer2DModel

    from ..builtin import full_transformer_on_meta

    config = None
    if key is not None:
        accepted = inspect.signature(FluxTransformer2DModel.__init__).parameters
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in key if k in accepted}
    model = full_transformer_on_meta(config)
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    block_counts = [_count(block) for block in blocks]
    outside = _count(model) + LinearCount(*(-sum(getattr(c, f) for c in block_counts)
                                            for f in ("linear", "rows", "other")))
    named = dict(model.named_modules())

    def lora_per_rank(train_mlp: bool) -> int:
        return sum(named[n].in_features + named[n].out_features for n in target_modules(model, train_mlp))

    return TransformerCounts(
        hidden=model.config.num_attention_heads * model.config.attention_head_dim,
        double_blocks=len(model.transformer_blocks),
        single_blocks=len(model.single_transformer_blocks),
        outside=outside,
        blocks=sum(block_counts, LinearCount()),
        largest_block=max(block_counts, key=lambda c: c.total),
        largest_linear=max(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        lora_per_rank={False: lora_per_rank(False), True: lora_per_rank(True)},
    )


def encoder_counts(pipe=None) -> EncoderCounts:
    """VAE + CLIP + T5 of the loaded pipeline (never quantized here), or FLUX.1-dev's on the meta device."""
    if pipe is None:
        return _flux_dev_encoders()
    return _encoders({name: getattr(pipe, name) for name in ("vae", "text_encoder", "text_encoder_2")})


@lru_cache(maxsize=1)
def _flux_dev_encoders() -> EncoderCounts:
    from ..builtin import full_encoders_on_meta

    return _encoders(full_encoders_on_meta())


def _encoders(modules: dict) -> EncoderCounts:
    whole = sum(p.numel() for m in modules.values() for p in m.parameters())
    t5_blocks = [sum(p.numel() for p in b.parameters()) for b in t5_block_list(modules["text_encoder_2"])]
    return EncoderCounts(whole=whole, t5_largest_block=max(t5_blocks, default=0), t5_blocks=sum(t5_blocks))


def t5_block_list(t5) -> list:
    encoder = getattr(t5, "encoder", None)
    return list(getattr(encoder, "block", None) or [])


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
    double = ACTIVATION_ELEMENTS[("double", train_mlp)] * width * ACTIVATION_BYTES
    single = ACTIVATION_ELEMENTS[("single", train_mlp)] * width * ACTIVATION_BYTES
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
) -> MemoryNeed:
    """The bytes a run in this configuration needs on the GPU (see the module docstring)."""
    counts = transformer_counts(transformer_config)
    if offload_blocks:
        weights = (weight_bytes(counts.outside, weights_format) + weight_bytes(counts.blocks, "nf4-offloaded")
                   + 2 * weight_bytes(counts.largest_block, weights_format))
    else:
        weights = weight_bytes(counts.total, weights_format)
    quantized = weights_format != "bf16"
    runtime = RUNTIME_BYTES + (2.0 * counts.largest_linear if quantized else 0.0)
    encoders = encoder_counts(pipe)
    if quantized:  # the T5 runs block by block while caching (lease.PipelineLease.encoders_on)
        on_gpu = encoders.whole - encoders.t5_blocks + encoders.t5_largest_block
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
