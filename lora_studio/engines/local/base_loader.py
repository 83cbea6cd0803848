"""Reading a Flux base from disk (or building a test one) as this machine's memory mode says.

The whole base (FLUX.1-dev or a FLUX.2 [klein] checkpoint: tokenizers, text encoders, VAE,
transformer) loads through `pipeline`, as the family its model_index.json names; a second transformer
alone (FLUX.1-Kontext-dev's, Klein's other flavour) through `transformer`, quantized like the base.
The base's weights are bf16, or quantized while loading when the memory mode (or an 8-bit speed
setting) says so: bitsandbytes and torchao weights are made by `from_pretrained`, never afterwards.
The speed settings that act on loaded modules are the model manager's next step (engines/speed/).
"""
from __future__ import annotations

import torch

from ..base import EngineError
from ..family import Family
from ..speed import SpeedSettings
from . import transformer_slots
from .model_kind import KLEIN_TINY_BASE_ID, KLEIN_TINY_ID, TINY_ID, WIDE_ID, model_family


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.bfloat16
    return torch.float32


class BaseLoader:
    """How this machine loads a base: device, dtype, memory mode, and what the last load decided
    (`quant`, reused for a swapped-in transformer; `offload`; `memory_note`, for the banner)."""

    def __init__(self, device: torch.device, memory_mode: str, offload: bool) -> None:
        self.device = device
        self.dtype = pick_dtype(device)
        self.memory_mode = memory_mode
        # "lowvram" (8 GB GPUs) also offloads whole models between uses at inference; training then
        # swaps the transformer's blocks itself (training/block_offload.py).
        self.offload = (offload or memory_mode in ("offload", "lowvram")) and device.type == "cuda"
        self.quant: str | None = None  # the base's load-time quantization
        self.memory_note = ""  # which memory mode the base was loaded in, and why
        self.architecture = "flux1-dev"  # what the auto quantization sizes the GPU for (the manager sets it)

    def pipeline(self, model_id: str, speed: SpeedSettings):
        """The whole base: built in code for the test models, else read with the base quantization."""
        built = _built_in(model_id)
        if built is not None:
            self.memory_note = ("Wide test model (real widths, one block of each kind): full precision."
                                if model_id == WIDE_ID else "Tiny model: full precision on the CPU.")
            return built
        import diffusers

        family = model_family(model_id)
        pipeline_class = getattr(diffusers, family.pipeline_classes[0])
        try:
            if speed.quantize and self.memory_mode == "auto":  # the speed setting decides the base
                quant = "8bit" if speed.quantize == "8bit" else None
                self.memory_note = f"Base weights in {speed.quantize} (speed setting)."
            else:
                quant = self._base_quantization()
            self.quant = quant
            if quant:
                transformer = getattr(diffusers, family.transformer_class).from_pretrained(
                    model_id, subfolder="transformer", quantization_config=_config(quant), dtype=self.dtype)
                return pipeline_class.from_pretrained(model_id, transformer=transformer, dtype=self.dtype)
            return pipeline_class.from_pretrained(model_id, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            from ..hub import load_failure_text  # a token, the licence or a download: the fix in words

            raise EngineError(load_failure_text(model_id, exc)) from None

    def transformer(self, model_id: str, what: str = "FLUX.1 Kontext's transformer") -> torch.nn.Module:
        """Only `transformer/` of a model, in the base's quantization."""
        built = _built_in(model_id)
        if built is not None:
            return built.transformer
        family: Family = model_family(model_id)
        return transformer_slots.load_transformer(model_id, self.dtype, _config(self.quant) if self.quant else None,
                                                  family=family, what=what)

    def _base_quantization(self) -> str | None:
        """8bit / nf4 / fp8 / lowvram (nf4) for the frozen base, as set or by free GPU memory (memory/)."""
        from ..memory import base_quantization

        choice, offload, self.memory_note = base_quantization(self.device, self.memory_mode, self.architecture)
        self.offload = self.offload or offload
        return choice


def _built_in(model_id: str):
    """The pipeline of a built-in test model (random weights, fixed seeds), or None."""
    from .. import builtin

    if model_id == TINY_ID:
        return builtin.build_tiny_flux()
    if model_id == WIDE_ID:
        return builtin.build_wide_flux()
    if model_id in (KLEIN_TINY_ID, KLEIN_TINY_BASE_ID):
        return builtin.build_tiny_klein(distilled=model_id == KLEIN_TINY_ID)
    return None


def _config(quant: str):
    from ..memory import plan_for, quantization_config

    return quantization_config(plan_for(quant, None, 1024))  # the plan's quantization only
