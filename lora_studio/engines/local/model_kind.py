"""What a folder or hub id holds, read from its model_index.json (no torch), and the built-in test models.

FLUX.1-dev and FLUX.1-Kontext-dev share an architecture and differ by weights: only the
`_class_name` in model_index.json tells them apart (FluxPipeline / FluxKontextPipeline), never the
name a user gave the folder. FLUX.2 [klein] names Flux2KleinPipeline, and its `is_distilled` says
which flavour it is. A hub id that is not downloaded yet is known by the checkpoint table
(engines/family/checkpoints.py). The setup page checks a choice with this before any model loads.

Built-in models are built in code with random weights (engines/builtin): `tiny-flux` and `wide-flux`
(FLUX.1), `klein-tiny` (FLUX.2 [klein], distilled) and `klein-tiny-base`, its base, with other weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..family import FLUX1, KLEIN, KONTEXT_CLASS, Family, Flavour, checkpoint, family_named, flavour_for, model_index

TINY_ID = "tiny-flux"
WIDE_ID = "wide-flux"  # FLUX.1-dev widths, one block of each kind (engines/builtin/wide.py): tests, benches
KLEIN_TINY_ID = "klein-tiny"  # a tiny FLUX.2 [klein], distilled (engines/builtin/klein.py)
KLEIN_TINY_BASE_ID = "klein-tiny-base"  # the same tiny Klein's base flavour: its own transformer weights
KLEIN_PIPELINE = KLEIN.pipeline_classes[0]
BUILT_IN = {  # id -> what it is
    TINY_ID: Flavour(FLUX1, "FluxPipeline"),
    WIDE_ID: Flavour(FLUX1, "FluxPipeline"),
    KLEIN_TINY_ID: Flavour(KLEIN, KLEIN_PIPELINE, distilled=True),
    KLEIN_TINY_BASE_ID: Flavour(KLEIN, KLEIN_PIPELINE, distilled=False),
}
BUILT_IN_SIBLINGS = {KLEIN_TINY_ID: KLEIN_TINY_BASE_ID, KLEIN_TINY_BASE_ID: KLEIN_TINY_ID}
RANDOM_WEIGHTS = tuple(BUILT_IN)  # built in code: no file, nothing to download
TINY_IDS = (TINY_ID, KLEIN_TINY_ID, KLEIN_TINY_BASE_ID)  # CPU-sized: run with the tiny engine's short calls
KONTEXT_HUB_ID = "black-forest-labs/FLUX.1-Kontext-dev"
DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"


def model_label(model_id: str | None) -> str:
    """A model as a page may name it: a hub id as it is, a folder by its last name only ("your model folder
    FLUX.1-dev"), never the server path that holds it (the banner is served to anyone with the link)."""
    text = str(model_id or "")
    if text and (Path(text).expanduser().is_absolute() or Path(text).expanduser().is_dir()):
        return f"your model folder {Path(text).name or text}"
    return text


def pipeline_class(model_id: str) -> str | None:
    """The `_class_name` in a folder's or a cached hub repo's model_index.json; None when unknown."""
    value = (model_index(model_id) or {}).get("_class_name")
    return value if isinstance(value, str) else None


def is_kontext(model_id: str) -> bool:
    return pipeline_class(model_id) == KONTEXT_CLASS


def model_flavour(model_id: str | None) -> Flavour | None:
    """What a model is: a built-in, what its model_index.json says, else what the checkpoint table knows
    of its hub id (not downloaded yet); None for a model of no known family."""
    if not model_id:
        return None
    if model_id in BUILT_IN:
        return BUILT_IN[model_id]
    found = flavour_for(model_id)
    if found is not None:
        return found
    known = checkpoint(model_id)
    if known is None:
        return None
    family = family_named(known.family)
    cls = KONTEXT_CLASS if known.editor else family.pipeline_classes[0]
    return Flavour(family, cls, distilled=known.distilled, editor=known.editor)


def model_family(model_id: str | None) -> Family:
    """The family of a model; FLUX.1 when nothing says otherwise (every model before FLUX.2 was FLUX.1)."""
    flavour = model_flavour(model_id)
    return flavour.family if flavour is not None else FLUX1


def is_present(model_id: str) -> bool:
    """A model that can load here now, judged without the network: a built-in, a folder with its index
    and transformer weights, or a hub id whose cached snapshot holds them."""
    if model_id in BUILT_IN:
        return True
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        return (folder / "model_index.json").is_file() and any((folder / "transformer").glob("*.safetensors"))
    try:
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(model_id, "model_index.json")
    except (ValueError, OSError):
        return False
    return isinstance(index, str) and any((Path(index).parent / "transformer").glob("*.safetensors"))


def architecture_of(model_id: str | None) -> str:
    """The full-size architecture a model's memory plan counts: "flux1-dev", "klein-4b" or "klein-9b"."""
    flavour = model_flavour(model_id)
    if flavour is None or flavour.family is not KLEIN:
        return "flux1-dev"
    known = checkpoint(model_id or "")
    if known is not None:
        return known.architecture
    index = model_index(model_id or "")
    if index is not None:  # a folder or a cached repo: its transformer's width says which
        config = _transformer_config(model_id)
        if config.get("joint_attention_dim", 0) >= 12288:
            return "klein-9b"
    return "klein-4b"


def _transformer_config(model_id: str) -> dict:
    folder = Path(model_id).expanduser()
    path = folder / "transformer" / "config.json" if folder.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "transformer/config.json")
        except (ValueError, OSError):
            return {}
        path = Path(cached) if isinstance(cached, str) else None
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
