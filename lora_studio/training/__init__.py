"""LoRA training for FLUX.1: data and caches, the flow-matching loop, checkpoints, presets, exports.

May import torch, diffusers and peft; knows nothing of gradio, the store or the services. It drives
the model manager it is given (engines never import training) and reads memory modes from engines.
Importing this package is cheap; the names below load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "train_lora": "trainer",
    "train_on_manager": "trainer",
    "ADAPTER_NAME": "trainer",
    "TrainingPreset": "presets",
    "PRESETS": "presets",
    "preset_request": "presets",
    "validate_hyperparameters": "presets",
    "to_kohya": "kohya_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
