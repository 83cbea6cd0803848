"""The transformer's shape without its weights: what a LoRA import is checked against.

Checking that a LoRA fits needs only each layer's name and in/out width. Reading them from the
loaded pipeline would mean taking the model lock, which a training holds for hours, or loading a
24 GB model just to look at it. Instead the same architecture is built on PyTorch's "meta" device
(no memory, no weights, a fraction of a second) from the configured model's config: the tiny and
wide configs in code, a real model's `transformer/config.json` from its folder or the local
Hugging Face cache. One skeleton per model is kept.
"""
from __future__ import annotations

import functools
import json

import torch

from ..base import EngineError
from ..local import TINY_ID, WIDE_ID


def skeleton_for(model_id: str) -> torch.nn.Module:
    """A meta-device FluxTransformer2DModel with the configured model's layers (cached)."""
    return _skeleton(json.dumps(transformer_config(model_id), sort_keys=True))


def transformer_config(model_id: str) -> dict:
    if model_id == TINY_ID:
        from ..builtin import TINY_TRANSFORMER

        return dict(TINY_TRANSFORMER)
    if model_id == WIDE_ID:
        from ..builtin import transformer_config as wide_config

        return dict(wide_config())
    from diffusers import FluxTransformer2DModel

    try:
        config = FluxTransformer2DModel.load_config(model_id, subfolder="transformer", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"Could not read the transformer config of {model_id!r} to check the LoRA against it "
            f"({str(exc).rstrip('.')}). Give a local FLUX.1 folder, or download the model first (Settings → Models "
            f"or `python -m lora_studio models download {model_id}`).") from None
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@functools.lru_cache(maxsize=4)
def _skeleton(config_json: str) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel.from_config(json.loads(config_json))
