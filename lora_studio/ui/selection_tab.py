"""Tab 3 · Selection: click to (de)select, quick-select the most consistent set, export a dataset."""
from __future__ import annotations

import gradio as gr

from ..services.selection import SUGGESTED, SelectionState
from . import wording
from .common import UIContext, friendly


def caption(item, selected: bool) -> str:
    mark = wording.SELECTED_MARK if selected else wording.UNSELECTED_MARK
    parts = [mark, f"{item.category} · {item.caption}"]
    score = item.score or {}
    if score.get("distance") is not None:
        parts.append(f"face d={score['distance']:.2f}")
    flags = [f["code"].replace("_", " ") for f in score.get("flags", [])]
    if flags:
        parts.append("⚠ " + ", ".join(flags[:2]))
    return " ".join(parts)


def render(ctx: UIContext) -> None:
    studio = ctx.studio
    gr.Markdown(wording.SELECTION_HELP)
    with gr.Row():
        quick = gr.Button(f"Quick-select {SUGGESTED}", variant="primary")
        score = gr.Button("Score faces")
        clear = gr.Button("Clear selection")
    summary = gr.Markdown(elem_id="selection-summary")
    warnings = gr.Markdown()
    gallery = gr.Gallery(label="Sheet (click to select)", columns=6, height=460, allow_preview=False,
                         elem_id="selection-gallery")
    with gr.Row():
        trigger = gr.Textbox(label="Trigger word", placeholder="e.g. mila_v1", scale=2)
        export = gr.Button("Export dataset for training", variant="primary", scale=1)
    exported = gr.Markdown()
    ids = gr.State([])

    def show(state: SelectionState):
        chosen = set(state.selected)
        items = [(str(i.path), caption(i, i.id in chosen)) for i in state.items]
        notes = "\n".join(f"- ⚠ {w}" for w in state.warnings)
        return items, [i.id for i in state.items], state.summary(), notes

    def refresh(character_id):
        if not character_id:
            return [], [], wording.NO_CHARACTER, ""
        return show(studio.selection.state(character_id))

    @friendly
    def toggle(character_id, image_ids, evt: gr.SelectData):
        return show(studio.selection.toggle(character_id, image_ids[evt.index]))

    @friendly
    def quick_select(character_id):
        return show(studio.selection.quick_select(character_id, SUGGESTED))

    @friendly
    def score_faces(character_id):
        return show(studio.selection.score(character_id))

    @friendly
    def clear_selection(character_id):
        return show(studio.selection.set_selection(character_id, []))

    @friendly
    def export_dataset(character_id, trigger_word):
        dataset = studio.selection.export_dataset(character_id, trigger_word)
        return (f"Dataset ready: {dataset['count']} images with captions and a zip "
                f"(`{dataset['zip']}`). Go to **Training**.")

    outputs = [gallery, ids, summary, warnings]
    gallery.select(toggle, [ctx.character, ids], outputs, api_visibility="private")
    quick.click(quick_select, [ctx.character], outputs, api_visibility="private")
    score.click(score_faces, [ctx.character], outputs, api_visibility="private")
    clear.click(clear_selection, [ctx.character], outputs, api_visibility="private")
    export.click(export_dataset, [ctx.character, trigger], [exported], api_visibility="private")
    ctx.character.change(refresh, [ctx.character], outputs, api_visibility="private")
    return refresh, [ctx.character], outputs
