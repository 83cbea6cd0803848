"""Settings, prices section: the Replicate price table every cost estimate reads, editable and kept in the workspace."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from . import wording
from .common import UIContext, friendly
from .owner import require_owner

COLUMNS = ["key", "what", "model", "usd", "per", "seconds", "fixed_seconds", "source", "date"]
EDITABLE = {"usd", "seconds", "fixed_seconds", "source", "date"}


def price_frame(studio) -> pd.DataFrame:
    rows = [[getattr(p, "label" if c == "what" else "unit" if c == "per" else c) for c in COLUMNS]
            for p in studio.costs.table().rows()]
    return pd.DataFrame(rows, columns=COLUMNS)


def render(ctx: UIContext) -> None:
    studio = ctx.studio
    gr.Markdown("### Replicate prices\n" + wording.PRICES_HELP)
    if not ctx.paid:
        gr.Markdown("_This app runs on this machine now: nothing is paid per call. The table matters when "
                    "you start it with `--engine replicate`._")
    table = gr.Dataframe(price_frame(studio), interactive=True, elem_id="price-table",
                         static_columns=[i for i, c in enumerate(COLUMNS) if c not in EDITABLE])
    gr.Markdown("`per` prediction: `usd` per call and `seconds` per call. `per` second: `usd` per billed second, "
                "`seconds` per training step plus `fixed_seconds` per run.")
    with gr.Row():
        save = gr.Button("Save prices", variant="primary")
        reset = gr.Button("Back to the built-in prices")
    status = gr.Markdown()

    @friendly
    def save_prices(frame, request: gr.Request):
        require_owner(studio, request)  # what every visitor's estimates and caps rest on
        rows = frame.to_dict("records")[:20] if isinstance(frame, pd.DataFrame) else []
        studio.costs.save([{k: r.get(k) for k in ("key", *EDITABLE)} for r in rows])
        return price_frame(studio), "Saved. New estimates use these prices."

    @friendly
    def reset_prices(request: gr.Request):
        require_owner(studio, request)
        studio.costs.reset()
        return price_frame(studio), "Back to the built-in prices."

    save.click(save_prices, [table], [table, status], api_visibility="private")
    reset.click(reset_prices, None, [table, status], api_visibility="private")
