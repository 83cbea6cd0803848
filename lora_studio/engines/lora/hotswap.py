"""LoRAs on a speed-tuned transformer: the fused-QKV form and the compiled hot-swap slot.

Two things make a plain `load_lora_weights` wrong or slow there:

- Fused QKV. After `fuse_qkv_projections` each attention calls `to_qkv` (and `to_added_qkv` for the
  text stream) and no longer `to_q/to_k/to_v`, so a LoRA loaded on those would be silently ignored.
  `canonical_lora(..., fused=True)` moves it onto the fused layers: A stacks the A's of q, k and v and
  B puts their B's on a block diagonal, so the fused layer adds exactly what the three did. Files that
  share one A for q, k and v (kohya/BFL "qkv" LoRAs) keep that one A and stack only the B's.
- Hot-swap under torch.compile. The compiled blocks must see the same layers, shapes and LoRA config
  whatever LoRA is in, and peft refuses a swap when two LoRAs' alpha patterns differ. So every LoRA is
  rewritten in one canonical form: each module's alpha/r scale baked into B, every module padded with
  zeros to one rank, hence scale 1 everywhere. The slot is created empty (zeros) on every linear of
  the transformer when the base loads (`add_hot_slot`), before the first compile, so no LoRA ever
  changes the graph; strengths are set by filling the scaling tensors in place (`set_hot_weight`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..base import EngineError
from .formats import scaled_pairs

HOT_SLOT = "hot"
QKV_GROUPS = (("to_q", "to_k", "to_v", "to_qkv"), ("add_q_proj", "add_k_proj", "add_v_proj", "to_added_qkv"))
_UNFUSED = {name for group in QKV_GROUPS for name in group[:3]}


def canonical_lora(pipe, path: Path, fused: bool) -> dict[str, torch.Tensor]:
    """The LoRA in `path` as a transformer state dict of scale-1, single-rank modules (see the module doc)."""
    from ..family import family_of_transformer

    try:
        pairs, _, dtype = scaled_pairs(path, family_of_transformer(pipe.transformer).key)
    except EngineError as exc:
        raise EngineError(f"{exc} The hot-swap and fused-QKV modes fold every LoRA: start with "
                          "--no-compile --no-fuse-qkv to use this one.") from None
    if fused:
        pairs = _onto_fused(pairs, pipe.transformer)
    rank = max(a.shape[0] for a, _ in pairs.values())
    out = {}
    for module, (a, b) in pairs.items():
        out[f"transformer.{module}.lora_A.weight"] = _pad_rows(a, rank).to(dtype)
        out[f"transformer.{module}.lora_B.weight"] = _pad_rows(b.T, rank).T.contiguous().to(dtype)
    return out


def canonical_rank(state: dict[str, torch.Tensor]) -> int:
    return max(t.shape[0] for k, t in state.items() if k.endswith("lora_A.weight"))


def _onto_fused(pairs: dict, transformer) -> dict:
    named = dict(transformer.named_modules())
    out = {m: p for m, p in pairs.items() if m.rsplit(".", 1)[-1] not in _UNFUSED}
    parents = {m.rsplit(".", 1)[0] for m in pairs if m.rsplit(".", 1)[-1] in _UNFUSED}
    for parent in sorted(parents):
        attn = named[parent]
        for *parts, fused_name in QKV_GROUPS:
            present = [(name, pairs.get(f"{parent}.{name}")) for name in parts]
            if not any(pair for _, pair in present):
                continue
            if not hasattr(attn, fused_name):
                raise EngineError(f"The transformer has no fused {fused_name} in {parent}; fused QKV is not on.")
            widths = [_base(getattr(attn, name)).out_features for name in parts]
            out[f"{parent}.{fused_name}"] = _stack(present, widths)
    return out


def _stack(present: list, widths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One (A, B) for the fused layer from the (A, B) of q, k and v (None where a projection has no LoRA)."""
    given = [pair for _, pair in present if pair is not None]
    shared = len(given) == len(present) and all(torch.equal(given[0][0], a) for a, _ in given[1:])
    if shared:  # kohya/BFL qkv files: one A for all three
        return given[0][0], torch.cat([b for _, b in given], dim=0)
    a = torch.cat([pair[0] for pair in given], dim=0)
    b = torch.zeros(sum(widths), a.shape[0])
    row = col = 0
    for (_, pair), width in zip(present, widths):
        if pair is not None:
            rank = pair[0].shape[0]
            b[row:row + width, col:col + rank] = pair[1]
            col += rank
        row += width
    return a, b


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])


def _base(module):
    return getattr(module, "base_layer", module)


def slot_modules(transformer, fused: bool) -> list[str]:
    """Every linear layer a Flux LoRA may target (the unfused q/k/v are skipped when fused: never called)."""
    names = []
    for name, module in transformer.named_modules():
        if ".lora_" in name or ".base_layer" in name or not isinstance(_base(module), torch.nn.Linear):
            continue
        if fused and name.rsplit(".", 1)[-1] in _UNFUSED:
            continue
        names.append(name)
    return names


def add_hot_slot(pipe, rank: int, fused: bool) -> list:
    """Create the empty hot-swap slot: zero LoRA weights on every linear, prepared for compiled swaps.

    Returns the slot's LoRA layers, for `set_hot_weight`."""
    transformer = pipe.transformer
    state = {}
    for name in slot_modules(transformer, fused):
        layer = _base(transformer.get_submodule(name))
        state[f"transformer.{name}.lora_A.weight"] = torch.zeros(rank, layer.in_features)
        state[f"transformer.{name}.lora_B.weight"] = torch.zeros(layer.out_features, rank)
    pipe.enable_lora_hotswap(target_rank=rank)
    pipe.load_lora_weights(state, adapter_name=HOT_SLOT)
    from peft.tuners.lora import LoraLayer

    layers = [m for m in transformer.modules() if isinstance(m, LoraLayer) and HOT_SLOT in m.scaling]
    set_hot_weight(layers, 0.0)
    return layers


def set_hot_weight(layers: list, weight: float) -> None:
    """Set the hot slot's strength in place: scaling tensors are filled, never replaced, so nothing recompiles.

    Canonical LoRAs have scale 1 everywhere, so the scaling is the weight itself.
    """
    for layer in layers:
        current = layer.scaling[HOT_SLOT]
        if isinstance(current, torch.Tensor):
            current.fill_(float(weight))
        else:  # set_adapters replaced it with a float: make it a tensor again
            layer.scaling[HOT_SLOT] = torch.tensor(float(weight), device=layer.lora_A[HOT_SLOT].weight.device)


__all__ = ["HOT_SLOT", "canonical_lora", "canonical_rank", "add_hot_slot", "set_hot_weight", "slot_modules"]
