"""Which family and flavour a folder or hub id holds, read from its model_index.json (no torch).

The repo's name says nothing reliable (users rename folders); diffusers itself decides from
`_class_name`, and a Klein repo says in `is_distilled` whether its transformer is step-distilled
(FLUX.2-klein-4B: true, FLUX.2-klein-base-4B: false). FLUX.1-dev and FLUX.1-Kontext-dev differ only in
`_class_name` (FluxPipeline / FluxKontextPipeline): Kontext is FLUX.1's editor, never a text-to-image model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .families import FAMILIES, FLUX1, Family

KONTEXT_CLASS = "FluxKontextPipeline"


@dataclass(frozen=True)
class Flavour:
    """What one model_index.json says: the family, the pipeline class, and for Klein the distillation."""

    family: Family
    pipeline_class: str
    distilled: bool = False  # Klein: step-distilled (4 steps, no CFG); FLUX.1: always False
    editor: bool = False  # FLUX.1 Kontext: draws the sheet, refuses text-to-image and training

    @property
    def defaults(self):
        return self.family.defaults(self.distilled)

    def describe(self) -> str:
        if self.editor:
            return f"{self.family.title} Kontext (image editor)"
        if self.family.key == "flux2-klein":
            return f"{self.family.title} {'distilled' if self.distilled else 'base'}"
        return self.family.title


def model_index(model_id: str) -> dict | None:
    """A folder's or a cached hub repo's model_index.json as a dict; None when there is none to read."""
    folder = Path(model_id).expanduser()
    index = folder / "model_index.json" if folder.is_dir() else None
    if index is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "model_index.json")
        except (ValueError, OSError):  # not a repo id
            return None
        index = Path(cached) if isinstance(cached, str) else None
    if index is None or not index.is_file():
        return None
    try:
        value = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # a damaged or hostile index (100 000 deep): not known
        return None
    return value if isinstance(value, dict) else None


def flavour_of(index: dict | None) -> Flavour | None:
    """The flavour a model_index.json names; None for a pipeline of no known family."""
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(cls, str):
        return None
    for family in FAMILIES:
        if cls in family.pipeline_classes:
            distilled = family is not FLUX1 and index.get("is_distilled") is True
            return Flavour(family, cls, distilled=distilled, editor=cls == KONTEXT_CLASS)
    return None


def flavour_for(model_id: str) -> Flavour | None:
    """The flavour of a folder or cached hub repo; None when unknown (not downloaded, other pipeline)."""
    return flavour_of(model_index(model_id))


def family_of_pipeline(pipe) -> Family:
    """The family of a loaded pipeline object, by its class (FLUX.1 for any other Flux pipeline)."""
    name = type(pipe).__name__
    return next((f for f in FAMILIES if name in f.pipeline_classes), FLUX1)


def family_of_transformer(transformer) -> Family:
    """The family of a transformer (peft-wrapped, compiled, quantized or in a DDP wrapper alike), by its
    class; FLUX.1 when no family's class is found."""
    module = transformer
    for _ in range(3):  # torch.compile's _orig_mod, DistributedDataParallel's module
        names = {cls.__name__ for cls in type(module).__mro__}
        found = next((f for f in FAMILIES if f.transformer_class in names), None)
        if found is not None:
            return found
        module = getattr(module, "_orig_mod", None) or getattr(module, "module", None)
        if module is None:
            break
    return FLUX1
