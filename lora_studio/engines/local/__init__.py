"""The local engine: diffusers on this machine, through one ModelManager holding one pipeline.

    engine.py         LocalEngine: the Engine interface on the manager (tiny, wide and real weights)
    model_manager.py      one pipeline in memory, LoRAs as adapters, the transformer a job needs
    base_loader.py        reading a base (or a lone transformer) as the memory mode says
    loras.py              named LoRA adapters and the hot-swap slot on the loaded transformer
    transformer_slots.py  transformers taking turns under one set of encoders (Kontext; Klein base/distilled)
    model_choice.py       which checkpoint each job runs, from the configured models (no torch)
    model_kind.py         what a folder or hub id holds, read from its model_index.json; built-ins (no torch)

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "LocalEngine": "engine", "make_local_engine": "engine",
    "ModelManager": "model_manager",
    "fits_in_host_ram": "transformer_slots",
    "TINY_ID": "model_kind", "WIDE_ID": "model_kind", "RANDOM_WEIGHTS": "model_kind", "TINY_IDS": "model_kind",
    "KLEIN_TINY_ID": "model_kind", "KLEIN_TINY_BASE_ID": "model_kind", "BUILT_IN": "model_kind",
    "DEV_HUB_ID": "model_kind", "KONTEXT_HUB_ID": "model_kind", "KONTEXT_CLASS": "model_kind",
    "pipeline_class": "model_kind",
    "model_flavour": "model_kind", "model_family": "model_kind", "architecture_of": "model_kind",
    "is_present": "model_kind", "model_label": "model_kind",
    "ModelChoice": "model_choice", "choose": "model_choice", "sheet_sentence": "model_choice",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
