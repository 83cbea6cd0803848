"""Which linears of a FLUX.1 transformer get a LoRA: the training recipe's targets, by full name.

Here in engines, not in training, because the memory planner counts the LoRA's weights from the same
list (training imports it from here; engines never import training).
"""
from __future__ import annotations

import torch

ATTENTION_MODULES = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
)
MLP_MODULES = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
SINGLE_MLP_MODULES = ("proj_mlp", "proj_out")  # single-stream blocks: MLP in, fused attn+MLP out


def target_modules(transformer: torch.nn.Module, train_mlp: bool) -> list[str]:
    """Full names of the linears that get a LoRA: attention everywhere, plus the MLPs if asked.

    Full names, not suffixes: "proj_out" as a suffix would also catch the model's final projection.
    Works on a model built on the meta device (for counting) as on a loaded one.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer):  # already wrapped by an inference LoRA
            module = module.get_base_layer()
        elif ".base_layer" in name or ".lora_" in name:
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        block, inner = parts[0], parts[2]
        if block == "transformer_blocks":
            if inner in ATTENTION_MODULES or (train_mlp and inner in MLP_MODULES):
                names.append(name)
        elif block == "single_transformer_blocks":
            if inner in ATTENTION_MODULES or (train_mlp and inner in SINGLE_MLP_MODULES):
                names.append(name)
    return names
