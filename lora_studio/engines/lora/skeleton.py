"""The transformer's shape without its weights: what a LoRA import is checked against.

Checking that a LoRA fits needs only each layer's name and in/out width. Reading them from the
loaded pipeline would mean taking the model lock, which a training holds for hours, or loading a
24 GB model just to look at it. Instead the same architecture is built on PyTorch's "meta" device
(no memory, no weights, a fraction of a second) from the configured model's config: the tiny and
wide configs in code, a real model's `transformer/config.json` from its folder or the local
Hugging Face cache, as the class its family names (FluxTransformer2DModel, Flux2Transformer2DModel).
One skeleton per model is kept.
"""
from __future__ import annotations

import functools
import json

import torch

from ..base import EngineError
from ..local import KLEIN_TINY_BASE_ID, KLEIN_TINY_ID, TINY_ID, WIDE_ID, model_family


def skeleton_for(model_id: str) -> torch.nn.Module:
    """A meta-device transformer of the configured model's family with its layers (cached)."""
    return _skeleton(json.dumps(transformer_config(model_id), sort_keys=True), model_family(model_id).transformer_class)


def transformer_config(model_id: str) -> dict:
    if model_id == TINY_ID:
        from ..builtin import TINY_TRANSFORMER

        return dict(TINY_TRANSFORMER)
    if model_id == WIDE_ID:
        from ..builtin import transformer_config as wide_config

        return dict(wide_config())
    if model_id in (KLEIN_TINY_ID, KLEIN_TINY_BASE_ID):
        from ..builtin import TINY_KLEIN_TRANSFORMER

        return dict(TINY_KLEIN_TRANSFORMER)
    import diffusers

    try:
        cls = getattr(diffusers, model_family(model_id).transformer_class)
        config = cls.load_config(model_id, subfolder="transformer", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"Could not read the transformer config of {model_id!r} to check the LoRA against it "
            f"({str(exc).rstrip('.')}). Give a local model folder, or download the model first (Settings → Models "
            f"or `python -m lora_studio models download {model_id}`).") from None
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@functools.lru_cache(maxsize=4)
def _skeleton(config_json: str, class_name: str) -> torch.nn.Module:
    import diffusers

    with torch.device("meta"):
        return getattr(diffusers, class_name).from_config(json.loads(config_json))
