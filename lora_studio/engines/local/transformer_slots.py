"""Transformers that take turns under one set of text encoders and VAE, and reading one alone.

FLUX.1-Kontext-dev has FLUX.1-dev's architecture but its own 12 B transformer weights, trained to edit
an image; its T5, CLIP and VAE are FLUX.1-dev's. FLUX.2 [klein]'s base and distilled checkpoints
likewise share Qwen3 and the VAE and differ in their transformers. So only the second model's
`transformer/` is ever loaded, and the transformers take turns in the one pipeline: the idle one
waits in CPU memory when the host has room for it (the next swap is a copy to the GPU), otherwise it
is dropped and read again from disk. Which role each job runs is model_choice.py's.

LoRAs are peft adapters inside a transformer's layers, so they stay on their transformer while the
other runs, and are active again when it swaps back.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import psutil
import torch

from ...sizes import GB
from ..base import EngineError
from ..family import FLUX1, Family

HOST_RAM_HEADROOM = 4 * 1024**3  # left free for the OS, the app and the next image's buffers


def load_transformer(model_id: str, dtype: torch.dtype, quantization_config=None, family: Family = FLUX1,
                     what: str = "FLUX.1 Kontext's transformer") -> torch.nn.Module:
    """Only `transformer/` of a model (FLUX.1-Kontext-dev, a Klein sibling): its encoders and VAE are never read."""
    import diffusers

    cls = getattr(diffusers, family.transformer_class)
    kwargs = {"quantization_config": quantization_config} if quantization_config is not None else {}
    try:
        return cls.from_pretrained(model_id, subfolder="transformer", dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        from ..hub import load_failure_text  # a token, the licence or a download: the fix in words

        raise EngineError(f"{what}: {load_failure_text(model_id, exc)}") from None


def module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers())


def fits_in_host_ram(nbytes: int) -> bool:
    """Whether an idle transformer of `nbytes` can wait in CPU memory, by free host RAM now."""
    return psutil.virtual_memory().available - HOST_RAM_HEADROOM >= nbytes


class TransformerSlots:
    """The transformers by role ("dev"/"kontext", "distilled"/"base") and which one the pipeline runs.

    `load(role)` reads a transformer from disk (the caller's loader, with the base's quantization);
    `prepare(module)` applies the speed settings to a freshly loaded one and puts it on the device.
    """

    def __init__(self, load: Callable[[str], torch.nn.Module], prepare: Callable[[torch.nn.Module], None],
                 device: torch.device) -> None:
        self._load, self._prepare, self.device = load, prepare, device
        self.modules: dict[str, torch.nn.Module] = {}
        self.active: str | None = None
        self.loads: Counter[str] = Counter()  # disk reads per role (tests and the bench read them)
        self.dropped: str | None = None  # the role last dropped for lack of host RAM
        self.note = ""

    def adopt(self, role: str, module: torch.nn.Module) -> None:
        """The transformer the base pipeline was loaded with."""
        self.modules[role], self.active = module, role
        self.loads[role] += 1

    def swap(self, pipe, role: str) -> torch.nn.Module:
        """Make `pipe` run `role`'s transformer; returns it. The other waits on the CPU or is dropped."""
        if self.active == role and role in self.modules:
            return self.modules[role]
        leaving = self.active
        if leaving is not None and leaving in self.modules:
            self._park(leaving)
        module = self.modules.get(role)
        if module is None:
            module = self._load(role)
            self.loads[role] += 1
            self._prepare(module)
            self.modules[role] = module
        elif self.device.type != "cpu" and _device_of(module) != self.device:
            module.to(self.device)
        pipe.transformer = module
        self.active = role
        return module

    def _park(self, role: str) -> None:
        module = self.modules[role]
        size = module_bytes(module)
        on_cpu = self.device.type == "cpu"  # then keeping it costs host RAM all the same
        if fits_in_host_ram(0 if on_cpu else size) and not _is_offloaded(module):
            if not on_cpu:
                module.to("cpu")
            self.note = f"The idle transformer ({size / GB:.1f} GB) waits in CPU memory."
        else:
            del self.modules[role]
            self.dropped = role
            self.note = (f"The idle transformer ({size / GB:.1f} GB) does not fit in free CPU memory: it is "
                         "read again from disk at the next swap.")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def clear(self) -> None:
        self.modules.clear()
        self.active, self.dropped, self.note = None, None, ""


def _device_of(module: torch.nn.Module) -> torch.device:
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def _is_offloaded(module: torch.nn.Module) -> bool:
    """Group-offloaded or quantized-on-load modules are moved by their hooks, not by `.to()`."""
    registry = getattr(module, "_diffusers_hook", None)  # a pipeline call leaves an empty one behind
    return bool(getattr(registry, "_hook_order", None)) or getattr(module, "hf_quantizer", None) is not None


def refuse(sentence: str) -> None:
    if sentence:
        raise EngineError(sentence)


__all__ = ["TransformerSlots", "load_transformer", "fits_in_host_ram", "module_bytes", "refuse"]
