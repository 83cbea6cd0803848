"""What autograd keeps for the backward pass in one double and one single block: the memory planner's
activation table (engines/memory/need.py) measured again on a wide model of either family."""
from __future__ import annotations

import torch
from peft import LoraConfig

from lora_studio.engines.lora.targets import target_modules


def saved_elements_per_token(transformer, train_mlp: bool, forward, side: int = 8, tokens: int = 16) -> dict[str, float]:
    """Elements saved per token and unit of width (fp32) in the first double and single block, with the
    recipe's LoRA on; `forward(transformer, side, tokens, generator)` runs the family's forward."""
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=target_modules(transformer, train_mlp)))
    weights = {p.untyped_storage().data_ptr() for p in transformer.parameters()}
    for name, param in transformer.named_parameters():
        param.requires_grad_("lora_" in name)
    seen: dict[int, int] = {}
    marks: list[int] = []

    def pack(tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in weights:
            seen.setdefault(pointer, tensor.untyped_storage().nbytes())
        return tensor

    blocks = [transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]]
    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(lambda *_: marks.append(sum(seen.values()))),
                                         b.register_forward_hook(lambda *_: marks.append(sum(seen.values()))))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            forward(transformer, side, tokens, torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
        transformer.unload_lora()
        transformer.requires_grad_(False)
    config = transformer.config
    per_unit = (side * side + tokens) * 4 * (config.num_attention_heads * config.attention_head_dim)
    return {"double": (marks[1] - marks[0]) / per_unit, "single": (marks[3] - marks[2]) / per_unit}
