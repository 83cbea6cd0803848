"""Speed settings for local generation: what `auto` picks for the GPU found, and applying them.

    settings.py  SpeedSettings, the GPU found, and the one-sentence choice (no torch at import)
    pipeline.py  the settings applied to a freshly loaded pipeline, in the order the pieces need

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "SpeedSettings": "settings", "OFF": "settings", "GpuInfo": "settings", "check_supported": "settings",
    "describe_choice": "settings", "gpu_info": "settings", "pick_device": "settings",
    "resolve_speed": "settings",
    "accelerate": "pipeline", "changes_model": "pipeline", "fp8_before_placing": "pipeline",
    "fuse_qkv": "pipeline", "place": "pipeline", "prepare_transformer": "pipeline",
    "quantize_fp8": "pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
