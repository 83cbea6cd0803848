"""Flux models built in code with random weights: no files, no network.

    tiny.py  a few-layer FLUX.1 that runs every code path on a CPU in seconds (the default engine)
    wide.py  FLUX.1-dev's real widths with one block of each kind: for whatever depends on width

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "build_tiny_flux": "tiny", "TINY_TRANSFORMER": "tiny", "byte_alphabet": "tiny",
    "build_wide_flux": "wide", "transformer_config": "wide",
    "full_transformer_on_meta": "wide", "full_encoders_on_meta": "wide",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
