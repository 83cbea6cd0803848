"""What kind of Flux model a folder or hub id holds, read from its model_index.json (no torch).

FLUX.1-dev and FLUX.1-Kontext-dev share an architecture and differ by weights: only the
`_class_name` in model_index.json tells them apart (FluxPipeline / FluxKontextPipeline), never the
name a user gave the folder. The setup page checks a choice with this before any model loads.
"""
from __future__ import annotations

import json
from pathlib import Path

KONTEXT_CLASS = "FluxKontextPipeline"
KONTEXT_HUB_ID = "black-forest-labs/FLUX.1-Kontext-dev"
DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"


def pipeline_class(model_id: str) -> str | None:
    """The `_class_name` in a folder's or a cached hub repo's model_index.json; None when unknown."""
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
        value = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def is_kontext(model_id: str) -> bool:
    return pipeline_class(model_id) == KONTEXT_CLASS
