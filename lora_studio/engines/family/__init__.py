"""Model families (FLUX.1, FLUX.2 [klein]) as data, recognised from a repo's model_index.json.

    families.py     what differs between the architectures: pipeline, sheet call, defaults, LoRA
                    targets, latent packing and ids, text embedding, training recipe, exports, memory inputs
    recognise.py    which family and flavour (Klein base or distilled, FLUX.1 Kontext) a folder or hub id holds
    checkpoints.py  the hub checkpoints the app knows: size, licence, gated or open, the other flavour

No torch anywhere in the package: the Settings page, the catalogue and the CLI use it freely.
"""
from __future__ import annotations

from .checkpoints import (APACHE, CHECKPOINTS, FLUX1_DEV_NC, FLUX_NC, KLEIN_4B, KLEIN_9B, KLEIN_BASE_4B,
                          KLEIN_BASE_9B, Checkpoint, checkpoint)
from .families import (FAMILIES, FLUX1, KLEIN, Defaults, Family, Latents, LoraTargets, TextEncoding,
                       TrainingRecipe, family_named)
from .recognise import (KONTEXT_CLASS, Flavour, family_of_pipeline, family_of_transformer, flavour_for, flavour_of,
                        model_index)

__all__ = [
    "APACHE", "CHECKPOINTS", "FAMILIES", "FLUX1", "FLUX1_DEV_NC", "FLUX_NC", "KLEIN", "KLEIN_4B", "KLEIN_9B",
    "KLEIN_BASE_4B", "KLEIN_BASE_9B", "KONTEXT_CLASS", "Checkpoint", "Defaults", "Family", "Flavour", "Latents", "LoraTargets",
    "TextEncoding", "TrainingRecipe", "checkpoint", "family_named", "family_of_pipeline", "family_of_transformer",
    "flavour_for", "flavour_of", "model_index",
]
