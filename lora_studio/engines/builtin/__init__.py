"""Flux models (FLUX.1 and FLUX.2 [klein]) built in code with random weights: no files, no network.

    tiny.py  a few-layer FLUX.1 that runs every code path on a CPU in seconds (the default engine)
    wide.py  FLUX.1-dev's real widths with one block of each kind: for whatever depends on width
    klein.py        a tiny FLUX.2 [klein] (base and distilled, different weights) on the same terms
    klein_wide.py   Klein 4 B / 9 B configs, the wide Klein, and the full models on the meta device

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "build_tiny_flux": "tiny", "TINY_TRANSFORMER": "tiny", "byte_alphabet": "tiny",
    "build_wide_flux": "wide", "transformer_config": "wide",
    "full_transformer_on_meta": "wide", "full_encoders_on_meta": "wide",
    "build_tiny_klein": "klein", "tiny_klein_components": "klein", "TINY_KLEIN_TRANSFORMER": "klein",
    "build_wide_klein": "klein_wide", "build_klein": "klein_wide", "klein_transformer_config": "klein_wide",
    "klein_transformer_on_meta": "klein_wide", "klein_encoders_on_meta": "klein_wide",
    "KLEIN_4B_TRANSFORMER": "klein_wide", "KLEIN_9B_TRANSFORMER": "klein_wide",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
