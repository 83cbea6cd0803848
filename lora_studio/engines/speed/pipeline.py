"""Applying SpeedSettings to a freshly loaded Flux pipeline, in the order the pieces need.

    fuse QKV (bf16 weights, before quantizing) -> place on the device (or group-offload)
    -> fp8 weights (torchao, on the device) -> [the model manager adds the hot-swap slot]
    -> first-block cache -> regional compile (last, so it sees the final modules)

The 8-bit base is not here: bitsandbytes weights are made while loading (model_manager passes a
quantization config to from_pretrained). Each step returns a note when it had to skip something.
"""
from __future__ import annotations

import torch

from .settings import SpeedSettings

ENCODERS = ("text_encoder", "text_encoder_2", "vae")
REPEATED_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def fuse_qkv(pipe, speed: SpeedSettings) -> str:
    if not speed.fuse_qkv:
        return ""
    if getattr(pipe.transformer, "hf_quantizer", None) is not None:
        return "Fused QKV skipped: the base was loaded quantized and its weights cannot be concatenated."
    pipe.transformer.fuse_qkv_projections()
    return ""


def place(pipe, device: torch.device, speed: SpeedSettings, model_offload: bool) -> None:
    """Put the components on `device`: directly, through group offloading, or through model CPU offload."""
    if speed.group_offload:
        offloaded = ENCODERS + (("transformer",) if speed.group_offload == "all" else ())
        for name, module in pipe.components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            if name in offloaded:
                _group_offload(module, device, blocks=name == "transformer")
            else:
                module.to(device)
    elif model_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


def _group_offload(module: torch.nn.Module, device: torch.device, blocks: bool) -> None:
    """The transformer streams one block at a time; text encoders and VAE layer by layer (they run once)."""
    from diffusers.hooks import apply_group_offloading

    stream = device.type == "cuda"  # prefetch the next group while this one computes
    apply_group_offloading(
        module, onload_device=device, offload_device=torch.device("cpu"),
        offload_type="block_level" if blocks else "leaf_level", num_blocks_per_group=1 if blocks else None,
        use_stream=stream, record_stream=stream, low_cpu_mem_usage=False,
    )


def fp8_before_placing(pipe, device: torch.device, speed: SpeedSettings) -> bool:
    """Quantize on the CPU first when the bf16 transformer would not fit the GPU (e.g. 24 GB cards);
    otherwise on the GPU, where it takes a second."""
    if speed.quantize != "fp8" or device.type != "cuda":
        return False
    need = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    free, _ = torch.cuda.mem_get_info(device)
    return need > 0.6 * free


def quantize_fp8(pipe, speed: SpeedSettings) -> None:
    """float8 weights and activations (row-wise scales) in the repeated blocks' linears: fp8 tensor cores."""
    if speed.quantize != "fp8":
        return
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    def in_blocks(module: torch.nn.Module, name: str) -> bool:
        return (isinstance(module, torch.nn.Linear) and name.startswith(REPEATED_BLOCKS)
                and module.in_features % 16 == 0 and module.out_features % 16 == 0)

    quantize_(pipe.transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=in_blocks)


def accelerate(pipe, speed: SpeedSettings) -> None:
    """First-block cache, then regional compilation of the repeated blocks (compiled lazily, on first use)."""
    transformer = pipe.transformer
    if speed.first_block_cache:
        from diffusers import FirstBlockCacheConfig

        transformer.enable_cache(FirstBlockCacheConfig(threshold=speed.first_block_cache))
    if speed.compile:
        # Cache and offloading hooks branch on data inside a block: those blocks compile with graph breaks.
        whole = not speed.first_block_cache and speed.group_offload != "all"
        transformer.compile_repeated_blocks(fullgraph=whole, backend=speed.compile_backend)


class _Holder:
    """What the steps above read of a pipeline (its transformer), for a transformer loaded on its own."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer


def prepare_transformer(pipe, transformer: torch.nn.Module, device: torch.device, speed: SpeedSettings,
                        model_offload: bool) -> None:
    """A transformer swapped in under `pipe`'s encoders (FLUX.1-Kontext-dev) gets the same treatment the
    base's transformer got: fused QKV, fp8, placement, first-block cache and compile (no hot slot: the
    sheet runs no LoRA)."""
    holder = _Holder(transformer)
    fuse_qkv(holder, speed)
    transformer.eval().requires_grad_(False)
    fp8_first = fp8_before_placing(holder, device, speed)
    if fp8_first:
        quantize_fp8(holder, speed)
    place_transformer(pipe, transformer, device, speed, model_offload)
    if not fp8_first:
        quantize_fp8(holder, speed)
    accelerate(holder, speed)


def place_transformer(pipe, transformer: torch.nn.Module, device: torch.device, speed: SpeedSettings,
                      model_offload: bool) -> None:
    """Put one transformer where `place` would have put the pipeline's; with model CPU offload the hooks
    are laid again over the pipeline once it runs this transformer (the caller sets it)."""
    if speed.group_offload == "all":
        _group_offload(transformer, device, blocks=True)
    elif model_offload:
        transformer.to("cpu")
    elif getattr(transformer, "hf_quantizer", None) is None or device.type == "cuda":
        transformer.to(device)


def changes_model(speed: SpeedSettings) -> bool:
    """Whether a pipeline loaded with `speed` differs from a plain one (training then reloads it plain)."""
    return bool(speed.fuse_qkv or speed.compile or speed.quantize == "fp8" or speed.group_offload
                or speed.first_block_cache)


__all__ = ["fuse_qkv", "place", "place_transformer", "prepare_transformer", "fp8_before_placing", "quantize_fp8", "accelerate", "changes_model"]
