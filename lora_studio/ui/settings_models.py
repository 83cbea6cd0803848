"""Settings, models section: the local model catalogue, downloads and the Hugging Face token."""
from __future__ import annotations

from .common import UIContext


def render(ctx: UIContext) -> None:
    """Nothing yet: models are given at launch with --model."""
