"""Refuse, in words, a .safetensors file that would only fail later as a LoRA.

A broken LoRA used to import fine and fail at generate time with raw torch text. Before anything is
copied into the library, every tensor is looked at: its type (floating point), its shape (2-D
matrices, rank at least 1, each down/A matrix with its up/B partner of the same rank), its values
(no NaN or infinity) and the adapter metadata diffusers writes beside them (a valid LoRA config).
The header is read first, so a file with a wrong type or shape is refused without loading it.
Names and widths against the model are `lora_formats.inspect_lora`'s job.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..base import EngineError

FLOAT_TYPES = {"F16", "BF16", "F32", "F64"}
MAX_TENSORS = 20000  # FLUX.1 has ~500 linear layers; three tensors each is the most a LoRA needs
METADATA_KEY = "lora_adapter_metadata"  # where diffusers keeps the peft LoraConfig
_DOWN = re.compile(r"(\.lora_A|\.lora_down|\.lora\.down|_lora\.down)(\.[^.]+)?\.weight$")
_UP = re.compile(r"(\.lora_B|\.lora_up|\.lora\.up|_lora\.up)(\.[^.]+)?\.weight$")


def check_tensors(path: Path) -> dict:
    """Raise EngineError for anything that cannot work as a LoRA; return {"rank": r, "tensors": n}."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise EngineError("LoRAs are accepted as .safetensors files only (pickled .ckpt/.pt can run code).")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
            _check_header(handle, keys)
            ranks = _check_pairs(handle, keys)
            for key in keys:  # values last: the header checks cost nothing, this reads every byte
                tensor = handle.get_tensor(key)
                if not bool(torch.isfinite(tensor).all()):
                    raise EngineError(f"Tensor {_short(key)} holds NaN or infinite values: the LoRA is broken "
                                      "(often a training that diverged). Use an earlier checkpoint.")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, EngineError):
            raise
        raise EngineError(f"{path.name[:80]} is not a readable .safetensors file ({str(exc)[:160]}).") from None
    rank = max(ranks) if ranks else None
    _check_metadata(metadata, rank)
    return {"rank": rank, "tensors": len(keys)}


def _check_header(handle, keys: list[str]) -> None:
    if not keys:
        raise EngineError("This LoRA file holds no tensors.")
    if len(keys) > MAX_TENSORS:
        raise EngineError(f"This file holds {len(keys)} tensors; a Flux LoRA has at most a few thousand.")
    for key in keys:
        piece = handle.get_slice(key)
        dtype, shape = piece.get_dtype(), piece.get_shape()
        if dtype not in FLOAT_TYPES:
            raise EngineError(f"Tensor {_short(key)} is stored as {dtype}; LoRA weights are floating point "
                              "(fp16, bf16 or fp32). Use the original, unquantized file.")
        if _DOWN.search(key) or _UP.search(key):
            if len(shape) != 2:
                raise EngineError(f"Tensor {_short(key)} is {len(shape)}-D {list(shape)}; a Flux LoRA's weights are "
                                  "2-D matrices. This file was made for another kind of model.")
            if 0 in shape:
                raise EngineError(f"Tensor {_short(key)} has shape {list(shape)}: rank 0 changes nothing. The file "
                                  "is damaged or empty.")
        elif key.endswith(".alpha") and math.prod(shape) != 1:
            raise EngineError(f"Tensor {_short(key)} should hold one number (the LoRA alpha), not {list(shape)}.")


def _check_pairs(handle, keys: list[str]) -> list[int]:
    """Every down/A matrix has its up/B partner, with the same rank; returns the ranks."""
    downs = {_DOWN.sub("", k): k for k in keys if _DOWN.search(k)}
    ups = {_UP.sub("", k): k for k in keys if _UP.search(k)}
    if not downs and not ups:
        return []
    lonely = sorted(set(downs) ^ set(ups))
    if lonely:
        half = "down/A" if lonely[0] in downs else "up/B"
        raise EngineError(f"Layer {_short(lonely[0])} has only its {half} matrix ({len(lonely)} layers are "
                          "incomplete); a LoRA needs both halves of every layer. The file is cut or damaged.")
    ranks = []
    for stem, down_key in downs.items():
        rank = handle.get_slice(down_key).get_shape()[0]
        if handle.get_slice(ups[stem]).get_shape()[1] != rank:
            raise EngineError(f"Layer {_short(stem)}: its two matrices disagree on the rank. The file is damaged.")
        ranks.append(rank)
    return ranks


def _check_metadata(metadata: dict, rank: int | None) -> None:
    """diffusers rebuilds a peft LoraConfig from this; a bad one fails only when loading."""
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return
    try:
        config = json.loads(raw)
    except (TypeError, ValueError):
        raise EngineError("The file's adapter metadata is not valid JSON; re-save the LoRA, or remove "
                          f"its '{METADATA_KEY}' entry.") from None
    if not isinstance(config, dict):
        raise EngineError("The file's adapter metadata is not a settings table; re-save the LoRA.")
    prefix = "transformer."
    fields = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    if not fields:
        return
    r, alpha = fields.get("r", rank), fields.get("lora_alpha", fields.get("r", rank))
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise EngineError(f"The adapter metadata gives rank {repr(r)[:20]}; it must be a whole number of 1 or more.")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise EngineError(f"The adapter metadata gives lora_alpha {repr(alpha)[:20]}; it must be a positive number.")
    for name in ("rank_pattern", "alpha_pattern"):
        if not isinstance(fields.get(name, {}), dict):
            raise EngineError(f"The adapter metadata's {name} must be a table of layer: number.")
    try:
        from peft import LoraConfig

        LoraConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"The adapter metadata is not a valid LoRA config ({str(exc)[:160]}).") from None


def _short(key: str) -> str:
    return key if len(key) <= 90 else key[:40] + "…" + key[-40:]
