"""Recognise the LoRA files people bring, and refuse the ones that cannot work on Flux.

Flux LoRAs circulate in diffusers/ai-toolkit naming (`transformer.transformer_blocks.0.attn.to_q
.lora_A.weight`), kohya/sd-scripts naming (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`)
and ComfyUI's (`diffusion_model.double_blocks...`). diffusers converts all of these on load; what it
does not do is tell a user that the SDXL LoRA they picked will never fit, so we check key names and
shapes first and say so in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .base import EngineError

SD_MARKERS = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "lora_te1_", "lora_te2_")
KOHYA_MARKERS = ("lora_unet_double_blocks", "lora_unet_single_blocks", "double_blocks.", "single_blocks.")


@dataclass
class LoraInspection:
    format: str  # "diffusers" | "kohya" | "comfyui"
    rank: int | None
    tensors: int
    modules: int  # layers of the transformer this LoRA changes
    state_dict: dict  # in diffusers naming, ready for load_lora_weights

    def to_dict(self) -> dict:
        return {"format": self.format, "rank": self.rank, "tensors": self.tensors, "modules": self.modules}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise EngineError("LoRAs are accepted as .safetensors files only (pickled .ckpt/.pt can run code).")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineError(f"{path.name} is not a readable .safetensors file ({exc}).") from None


def detect_format(keys: list[str]) -> str:
    if not keys:
        raise EngineError("This LoRA file holds no tensors.")
    joined = " ".join(keys[:400])
    if any(marker in joined for marker in KOHYA_MARKERS):
        return "comfyui" if "diffusion_model." in joined else "kohya"
    if "transformer_blocks" in joined or "single_transformer_blocks" in joined:
        return "diffusers"
    if any(marker in joined for marker in SD_MARKERS):
        raise EngineError(
            "This LoRA was made for Stable Diffusion (SD 1.5 / SDXL UNet), not for FLUX.1: "
            "it cannot be used here. Pick a Flux LoRA."
        )
    raise EngineError("This file does not look like a FLUX.1 LoRA (no known key names).")


def inspect_lora(path: Path, transformer: torch.nn.Module | None = None) -> LoraInspection:
    """Read, detect, convert to diffusers naming and (given a transformer) check every shape."""
    from diffusers import FluxPipeline

    raw = read_state_dict(path)
    kind = detect_format(list(raw))
    try:
        converted = FluxPipeline.lora_state_dict(raw)
    except Exception as exc:  # noqa: BLE001 - converters raise assorted errors for odd files
        raise EngineError(f"This {kind} LoRA could not be converted for Flux: {exc}") from None
    if isinstance(converted, tuple):
        converted = converted[0]
    ranks = {t.shape[0] for k, t in converted.items() if "lora_A" in k and t.ndim == 2}
    modules = {k.split(".lora_")[0] for k in converted if ".lora_" in k}
    if transformer is not None:
        _check_shapes(converted, transformer)
    return LoraInspection(
        format=kind, rank=max(ranks) if ranks else None, tensors=len(raw), modules=len(modules),
        state_dict=converted,
    )


def _check_shapes(state: dict[str, torch.Tensor], transformer: torch.nn.Module) -> None:
    named = dict(transformer.named_modules())
    for key, tensor in state.items():
        if ".lora_A" not in key and ".lora_B" not in key:
            continue
        module_name = key.split(".lora_")[0].removeprefix("transformer.")
        module = named.get(module_name)
        base = getattr(module, "base_layer", module)
        if not isinstance(base, torch.nn.Linear):
            raise EngineError(
                f"This LoRA targets a layer this Flux model does not have ({module_name}); it was "
                "made for another model."
            )
        if ".lora_A" in key and tensor.shape[1] != base.in_features:
            raise _size_error(module_name, tensor.shape[1], base.in_features)
        if ".lora_B" in key and tensor.shape[0] != base.out_features:
            raise _size_error(module_name, tensor.shape[0], base.out_features)


def _size_error(module: str, got: int, want: int) -> EngineError:
    return EngineError(
        f"This LoRA does not fit the loaded Flux model: layer {module} is {want} wide, the LoRA "
        f"expects {got}. It was trained for a different model (e.g. full FLUX.1 vs. the tiny test model)."
    )
