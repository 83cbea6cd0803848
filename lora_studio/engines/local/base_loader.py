"""Reading a Flux base from disk (or building a test one) as this machine's memory mode says.

The whole base (FLUX.1-dev: tokenizers, text encoders, VAE, transformer) loads through `pipeline`;
a second transformer alone (FLUX.1-Kontext-dev's) through `transformer`, quantized like the base.
The base's weights are bf16, or quantized while loading when the memory mode (or an 8-bit speed
setting) says so: bitsandbytes and torchao weights are made by `from_pretrained`, never afterwards.
The speed settings that act on loaded modules are the model manager's next step (engines/speed/).
"""
from __future__ import annotations

import torch
from diffusers import FluxPipeline

from ..base import EngineError
from ..speed import SpeedSettings
from . import kontext as kontext_swap
from .model_kind import TINY_ID, WIDE_ID


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

    def pipeline(self, model_id: str, speed: SpeedSettings) -> FluxPipeline:
        """The whole base: built in code for the test models, else read with the base quantization."""
        if model_id == TINY_ID:
            from ..builtin import build_tiny_flux

            self.memory_note = "Tiny model: full precision on the CPU."
            return build_tiny_flux()
        if model_id == WIDE_ID:
            from ..builtin import build_wide_flux

            self.memory_note = "Wide test model (real widths, one block of each kind): full precision."
            return build_wide_flux()
        try:
            if speed.quantize and self.memory_mode == "auto":  # the speed setting decides the base
                quant = "8bit" if speed.quantize == "8bit" else None
                self.memory_note = f"Base weights in {speed.quantize} (speed setting)."
            else:
                quant = self._base_quantization()
            self.quant = quant
            if quant:
                from diffusers import FluxTransformer2DModel

                transformer = FluxTransformer2DModel.from_pretrained(
                    model_id, subfolder="transformer", quantization_config=_config(quant), dtype=self.dtype)
                return FluxPipeline.from_pretrained(model_id, transformer=transformer, dtype=self.dtype)
            return FluxPipeline.from_pretrained(model_id, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            from ..hub import load_failure_text  # a token, the licence or a download: the fix in words

            raise EngineError(load_failure_text(model_id, exc)) from None

    def transformer(self, model_id: str) -> torch.nn.Module:
        """Only `transformer/` of a model, in the base's quantization."""
        return kontext_swap.load_transformer(model_id, self.dtype, _config(self.quant) if self.quant else None)

    def _base_quantization(self) -> str | None:
        """8bit / nf4 / fp8 / lowvram (nf4) for the frozen base, as set or by free GPU memory (memory/)."""
        from ..memory import base_quantization

        choice, offload, self.memory_note = base_quantization(self.device, self.memory_mode)
        self.offload = self.offload or offload
        return choice


def _config(quant: str):
    from ..memory import plan_for, quantization_config

    return quantization_config(plan_for(quant, None, 1024))  # the plan's quantization only
