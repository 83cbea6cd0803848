"""Settings, prices section: the Replicate price table every cost estimate reads, editable and kept in the workspace."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ..studio import Studio
from . import wording
from .common import UIContext
from .events import KEEP, Reply
from .owner import owner_only

COLUMNS = ["key", "what", "model", "usd", "per", "seconds", "fixed_seconds", "source", "date"]
EDITABLE = {"usd", "seconds", "fixed_seconds", "source", "date"}


def price_frame(studio) -> pd.DataFrame:
    rows = [[getattr(p, "label" if c == "what" else "unit" if c == "per" else c) for c in COLUMNS]
            for p in studio.costs.table().rows()]
    return pd.DataFrame(rows, columns=COLUMNS)


class PricesParts:
    table: gr.Dataframe
    save: gr.Button
    reset: gr.Button
    status: gr.Markdown


@dataclass
class PricesView(Reply):
    table: pd.DataFrame = KEEP
    status: str = KEEP


@owner_only  # what every visitor's estimates and caps rest on
def save_prices(studio: Studio, frame) -> PricesView:
    rows = frame.to_dict("records")[:20] if isinstance(frame, pd.DataFrame) else []
    studio.costs.save([{k: r.get(k) for k in ("key", *EDITABLE)} for r in rows])
    return PricesView(table=price_frame(studio), status="Saved. New estimates use these prices.")


@owner_only
def reset_prices(studio: Studio) -> PricesView:
    studio.costs.reset()
    return PricesView(table=price_frame(studio), status="Back to the built-in prices.")


def render(ctx: UIContext) -> PricesParts:
    p = PricesParts()
    gr.Markdown("### Replicate prices\n" + wording.PRICES_HELP)
    if not ctx.paid:
        gr.Markdown("_This app runs on this machine now: nothing is paid per call. The table matters when "
                    "you start it with `--engine replicate`._")
    p.table = gr.Dataframe(price_frame(ctx.studio), interactive=True, elem_id="price-table",
                           static_columns=[i for i, c in enumerate(COLUMNS) if c not in EDITABLE])
    gr.Markdown("`per` prediction: `usd` per call and `seconds` per call. `per` second: `usd` per billed second, "
                "`seconds` per training step plus `fixed_seconds` per run.")
    with gr.Row():
        p.save = gr.Button("Save prices", variant="primary")
        p.reset = gr.Button("Back to the built-in prices")
    p.status = gr.Markdown()
    return p


def listen(ctx: UIContext, p: PricesParts) -> None:
    ctx.on(p.save.click, save_prices, [p.table], PricesView.to(p))
    ctx.on(p.reset.click, reset_prices, None, PricesView.to(p))
