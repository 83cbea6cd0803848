"""Settings, engine section: which engine and models the app runs (filled in by the setup work)."""
from __future__ import annotations

from .common import UIContext


def render(ctx: UIContext) -> None:
    """Nothing yet: the engine is chosen at launch (flags and LORA_STUDIO_* variables)."""
