"""Settings tab: one section per module, so engine setup, model downloads and prices grow apart."""
from __future__ import annotations

from . import settings_engine, settings_models, settings_prices
from .common import UIContext


def render(ctx: UIContext) -> None:
    for section in (settings_engine, settings_models, settings_prices):
        section.listen(ctx, section.render(ctx))
