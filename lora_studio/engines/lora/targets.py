"""Which linears of a Flux transformer get a LoRA: the training recipe's targets, by full name.

Here in engines, not in training, because the memory planner counts the LoRA's weights from the same
list (training imports it from here; engines never import training). The module names per block come
from the transformer's family (engines/family): FLUX.1's separate q/k/v and GELU MLPs, or Klein's
SwiGLU MLPs and fused single-block input and output.
"""
from __future__ import annotations

import torch

from ..family import family_of_transformer


def target_modules(transformer: torch.nn.Module, train_mlp: bool) -> list[str]:
    """Full names of the linears that get a LoRA: attention everywhere, plus the MLPs if asked.

    Full names, not suffixes: "proj_out" as a suffix would also catch the model's final projection.
    Works on a model built on the meta device (for counting) as on a loaded one.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = family_of_transformer(transformer).lora_targets
    wanted = {"transformer_blocks": set(targets.double(train_mlp)),
              "single_transformer_blocks": set(targets.single(train_mlp))}
    names = []
    for name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer):  # already wrapped by an inference LoRA
            module = module.get_base_layer()
        elif ".base_layer" in name or ".lora_" in name:
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2] in wanted.get(parts[0], ()):
            names.append(name)
    return names
