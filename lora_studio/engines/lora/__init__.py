"""LoRA files on a Flux transformer: checked, recognised, targeted and hot-swapped.

    checks.py     refuse in words a .safetensors file that would only fail later
    formats.py    diffusers / kohya / ai-toolkit files read, alpha/rank folded, saved
    targets.py    which linears of a transformer get a LoRA (training and the memory plan)
    skeleton.py   the transformer's layer shapes without weights, that an import is checked against
    kinds.py      which model family (FLUX.1, FLUX.2 [klein]) a file was made for, from its header
    hotswap.py    LoRAs on a speed-tuned transformer: fused QKV and the compiled hot-swap slot

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "check_tensors": "checks", "METADATA_KEY": "checks",
    "inspect_lora": "formats", "read_scale": "formats", "fold_lora": "formats",
    "save_lora_file": "formats", "scale_one_config": "formats", "scaled_pairs": "formats",
    "target_modules": "targets",
    "skeleton_for": "skeleton",
    "lora_family": "kinds", "lora_family_of": "kinds", "mismatch_text": "kinds",
    "HOT_SLOT": "hotswap", "add_hot_slot": "hotswap", "canonical_lora": "hotswap",
    "canonical_rank": "hotswap", "set_hot_weight": "hotswap",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
