"""Export a diffusers-format FLUX.1 or FLUX.2 [klein] LoRA to kohya / sd-scripts naming (BFL module names).

ComfyUI, Forge and most LoRA tools read this layout:

    lora_unet_double_blocks_{i}_img_attn_qkv.lora_down.weight   [rank, in]
    lora_unet_double_blocks_{i}_img_attn_qkv.lora_up.weight     [out, rank]
    lora_unet_double_blocks_{i}_img_attn_qkv.alpha              scalar

Effective update of a module: ``up @ down * alpha / rank``. The trainer exports its adapter with
the alpha/rank scale already folded into the weights and alpha = rank (training/outputs.py), so
every `.alpha` here equals its module's rank: a loader that reads `.alpha` and one that ignores it
(scale 1.0) apply the same update.

BFL's reference model fuses some linears that diffusers keeps apart:

    double_blocks.{i}.img_attn.qkv   = attn.to_q | to_k | to_v            (stacked outputs)
    double_blocks.{i}.txt_attn.qkv   = attn.add_q_proj | add_k_proj | add_v_proj
    single_blocks.{i}.linear1        = attn.to_q | to_k | to_v | proj_mlp
    single_blocks.{i}.linear2        = proj_out

A fused module gets one LoRA whose down matrix stacks the parts' A matrices ([n*r, in]) and whose up
matrix is block-diagonal ([sum(out), n*r], each part's B in its own rows and rank columns). Its rank
is n*r, so its alpha is n*alpha: alpha/rank, and with it every part's update, is unchanged. This is
exact (no SVD), and it is the form diffusers' kohya loader (`_convert_kohya_flux_lora_to_diffusers`)
recognises as "sparse" and splits back into the separate parts. A part without a LoRA (e.g. proj_mlp
when the MLPs were not trained) gets zero rows/blocks; its output width is inferred as 4x the
attention width (FLUX's mlp_ratio).

The unfused modules map one to one: img_attn_proj (attn.to_out.0), txt_attn_proj (attn.to_add_out),
img_mlp_0/2 (ff.net.0.proj / ff.net.2), txt_mlp_0/2 (ff_context.net.0.proj / .net.2), img_mod_lin /
txt_mod_lin (norm1.linear / norm1_context.linear), modulation_lin (single-block norm.linear).

Round trip, checked against diffusers 0.42: its kohya loader splits `single_blocks_*_linear1` with
FLUX.1's widths hard-coded (3072, 3072, 3072, 12288). At FLUX.1's real width every key loads back,
single blocks included, into the same weight updates and the same image as the diffusers file:
tests/test_wide_loras.py proves it on the wide Flux (engines/builtin/wide.py), with ComfyUI's naming too. On
the tiny test model only the double blocks can be loaded back (its widths are not 3072), so
tests/test_kohya_export.py checks the single-block layout there by shape and by the update it applies.

FLUX.2 [klein] (`family="flux2-klein"`, the names musubi-tuner writes and diffusers'
`_convert_kohya_flux2_lora_to_diffusers` reads): the double blocks fuse q|k|v the same way (and are
split back the same way), the MLPs are SwiGLU pairs `img_mlp_0/2` (ff.linear_in / ff.linear_out) and
`txt_mlp_0/2` (ff_context.*), and a single block's diffusers layers already are BFL's fused ones:
`linear1` is attn.to_qkv_mlp_proj and `linear2` attn.to_out, one to one. That loader hard-codes no
width, so the whole round trip holds at any width, the tiny Klein's included (tests/test_klein_kohya.py);
it has no names for per-block modulation (FLUX.2's modulation is global), which the recipe never trains.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

@dataclass(frozen=True)
class KohyaLayout:
    """diffusers module suffix within a block -> BFL name, per family, and the sd-scripts metadata."""

    double_simple: dict[str, str]
    double_fused: dict[str, tuple[str, ...]]
    single_simple: dict[str, str]
    single_fused: dict[str, tuple[str, ...]]
    base_model_version: str
    architecture: str


_QKV = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_ATTN_OUT = {"attn.to_out.0": "img_attn_proj", "attn.to_add_out": "txt_attn_proj"}
LAYOUTS = {
    "flux1": KohyaLayout(
        double_simple={**_ATTN_OUT, "ff.net.0.proj": "img_mlp_0", "ff.net.2": "img_mlp_2",
                       "ff_context.net.0.proj": "txt_mlp_0", "ff_context.net.2": "txt_mlp_2",
                       "norm1.linear": "img_mod_lin", "norm1_context.linear": "txt_mod_lin"},
        double_fused=_QKV,
        single_simple={"proj_out": "linear2", "norm.linear": "modulation_lin"},
        single_fused={"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")},
        base_model_version="flux1", architecture="flux-1-dev/lora",
    ),
    "flux2-klein": KohyaLayout(
        double_simple={**_ATTN_OUT, "ff.linear_in": "img_mlp_0", "ff.linear_out": "img_mlp_2",
                       "ff_context.linear_in": "txt_mlp_0", "ff_context.linear_out": "txt_mlp_2"},
        double_fused=_QKV,
        single_simple={"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"},
        single_fused={},
        base_model_version="flux2_klein", architecture="flux-2-klein/lora",
    ),
}
MLP_RATIO = 4  # FLUX.1's single-block MLP width, for a proj_mlp part without a LoRA


def _split_diffusers_key(key: str) -> tuple[str, str, str] | None:
    """("double"|"single", block index, module suffix) of a diffusers LoRA key, or None."""
    if key.startswith("transformer."):
        key = key[len("transformer.") :]
    for kind, prefix in (("double", "transformer_blocks."), ("single", "single_transformer_blocks.")):
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            module = rest.rsplit(".lora_", 1)[0]
            return kind, index, module
    return None


def to_kohya(state_dict: dict[str, torch.Tensor], alpha: float, rank: int,
             family: str = "flux1") -> dict[str, torch.Tensor]:
    """kohya/BFL-named LoRA tensors from a diffusers/peft LoRA state dict (with or without the
    "transformer." prefix) of a `family` transformer trained with `lora_alpha=alpha`, `r=rank`."""
    layout = LAYOUTS[family]
    modules: dict[tuple[str, str], dict[str, dict[str, torch.Tensor]]] = {}
    for key, tensor in state_dict.items():
        parts = _split_diffusers_key(key)
        if parts is None or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"Cannot export {key!r}: only transformer block LoRA layers map to kohya names.")
        kind, index, module = parts
        ab = "A" if key.endswith(".lora_A.weight") else "B"
        modules.setdefault((kind, index), {}).setdefault(module, {})[ab] = tensor

    out: dict[str, torch.Tensor] = {}
    for (kind, index), layers in sorted(modules.items(), key=lambda item: (item[0][0], int(item[0][1]))):
        simple = layout.double_simple if kind == "double" else layout.single_simple
        fused = layout.double_fused if kind == "double" else layout.single_fused
        block = f"lora_unet_{kind}_blocks_{index}_"
        used = set()
        for name, members in fused.items():
            present = [m for m in members if m in layers]
            if not present:
                continue
            down, up = _fuse([layers.get(m) for m in members], members)
            out[block + name + ".lora_down.weight"] = down
            out[block + name + ".lora_up.weight"] = up
            out[block + name + ".alpha"] = torch.tensor(float(alpha) * len(members))
            used.update(present)
        for module, name in simple.items():
            if module in layers:
                pair = layers[module]
                out[block + name + ".lora_down.weight"] = pair["A"].contiguous()
                out[block + name + ".lora_up.weight"] = pair["B"].contiguous()
                out[block + name + ".alpha"] = torch.tensor(float(alpha))
                used.add(module)
        unknown = sorted(set(layers) - used)
        if unknown:
            raise ValueError(f"Cannot export {kind} block {index} modules {unknown}: no kohya name for them.")
        for pair in layers.values():
            if pair["A"].shape[0] != rank:
                raise ValueError(f"Expected rank {rank}, found a LoRA of rank {pair['A'].shape[0]}.")
    return out


def _fuse(pairs: list[dict[str, torch.Tensor] | None], members: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked down and block-diagonal up for parts of a fused linear; missing parts are zero."""
    known = [p for p in pairs if p is not None]
    rank, in_features = known[0]["A"].shape
    attention_width = known[0]["B"].shape[0]
    ref = known[0]["A"]
    downs, out_widths, ups = [], [], []
    for pair, member in zip(pairs, members):
        if pair is None:
            width = attention_width * MLP_RATIO if member == "proj_mlp" else attention_width
            downs.append(torch.zeros(rank, in_features, dtype=ref.dtype))
            ups.append(torch.zeros(width, rank, dtype=ref.dtype))
        else:
            downs.append(pair["A"].to(ref.dtype))
            ups.append(pair["B"].to(ref.dtype))
        out_widths.append(ups[-1].shape[0])
    down = torch.cat(downs, dim=0)
    up = torch.zeros(sum(out_widths), rank * len(members), dtype=ref.dtype)
    row = 0
    for part, block in enumerate(ups):
        up[row : row + block.shape[0], part * rank : (part + 1) * rank] = block
        row += block.shape[0]
    return down.contiguous(), up.contiguous()


def save_kohya(
    path: Path, state_dict: dict[str, torch.Tensor], alpha: float, rank: int, metadata: dict | None = None,
    family: str = "flux1",
) -> Path:
    """Write `to_kohya(...)` as a safetensors file (atomically) with sd-scripts style metadata."""
    path = Path(path)
    layout = LAYOUTS[family]
    tensors = {k: v.detach().cpu().contiguous() for k, v in to_kohya(state_dict, alpha, rank, family).items()}
    info = {
        "ss_network_module": "networks.lora_flux" if family == "flux1" else "networks.lora_flux_2",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": layout.base_model_version,
        "modelspec.architecture": layout.architecture,
    }
    for key, value in (metadata or {}).items():
        info[key] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=info)
    os.replace(tmp, path)
    return path
