"""Which weights ran: random-weight doubles look alike in their pictures, so tests tell two checkpoints
(FLUX.1-dev and Kontext, Klein distilled and base) apart by a checksum of the transformer that a
forward pass actually went through."""
from __future__ import annotations

import torch


def checksum(module: torch.nn.Module, with_lora: bool = True) -> float:
    """The sum of a module's weights (a LoRA's own tensors left out unless `with_lora`)."""
    with torch.no_grad():
        return float(sum(p.double().sum() for name, p in module.named_parameters()
                         if with_lora or "lora_" not in name))


def checksums_that_ran(action, transformer_class: type, with_lora: bool = True) -> list[float]:
    """The checksum of each `transformer_class` forward inside `action`, in order."""
    seen: list[float] = []

    def record(module, *_):
        if isinstance(module, transformer_class):
            seen.append(checksum(module, with_lora))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        action()
    finally:
        hook.remove()
    return seen
