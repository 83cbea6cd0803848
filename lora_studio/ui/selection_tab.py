"""Tab 3 · Selection: click to (de)select, quick-select the most consistent set, export a dataset.

Selected and unselected images look different at a glance: each caption starts with a mark (✓ / ○)
that the gallery also writes into the image's `alt` text, and the CSS in `style.py` keys on it
(unselected dimmed, selected outlined). Errors never blank the gallery: they show beside it.
"""
from __future__ import annotations

import html

import gradio as gr

from ..services.selection import SUGGESTED, SelectionState
from . import wording
from .common import UIContext, beside


def caption(item, selected: bool) -> str:
    """The full caption: mark, category and label, face distance, and every flag with its reason."""
    mark = wording.SELECTED_MARK if selected else wording.UNSELECTED_MARK
    parts = [f"{mark} {item.category} · {item.caption}"]
    score = item.score or {}
    if score.get("distance") is not None:
        parts.append(f"face d={score['distance']:.2f}")
    elif score and not score.get("face_found", True):
        parts.append("no face measured")
    parts += [f"⚠ {f['code'].replace('_', ' ')}: {f.get('reason', '')}".rstrip(": ") for f in score.get("flags", [])]
    return " · ".join(parts)


def details(item, selected: bool) -> str:
    """What the panel beside the gallery says about the image last clicked."""
    score = item.score or {}
    state = "**selected** ✓" if selected else "not selected"
    lines = [f"**{html.escape(item.category or '')} · {html.escape(item.caption)}** — {state}"]
    if score.get("distance") is not None:
        verdict = "same person" if score.get("same_person") else "may be someone else"
        lines.append(f"Face distance to the reference: **{score['distance']:.3f}** ({verdict}; 0.6 is the usual limit)")
    elif score:
        lines.append("No face measured in this image.")
    else:
        lines.append("Not measured yet: click **Score faces**.")
    flags = score.get("flags", [])
    lines += [f"- ⚠ **{f['code'].replace('_', ' ')}**: {html.escape(f.get('reason', ''))}" for f in flags]
    if not flags and score:
        lines.append("No quality flags.")
    return "\n\n".join(lines)


def render(ctx: UIContext):
    studio = ctx.studio
    gr.Markdown(wording.SELECTION_HELP)
    with gr.Row():
        quick = gr.Button(f"Quick-select {SUGGESTED}", variant="primary")
        score = gr.Button("Score faces")
        clear = gr.Button("Clear selection")
    summary = gr.Markdown(elem_id="selection-summary")
    warnings = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=4):
            # No floating label: it would cover the first row's ✓ marks (the summary above says the count).
            gallery = gr.Gallery(label="Sheet (click to select)", show_label=False, columns=6, height=460,
                                 allow_preview=False, elem_id="selection-gallery")
        with gr.Column(scale=1, min_width=220):
            message = gr.HTML(elem_id="selection-message")
            detail = gr.Markdown(wording.SELECTION_DETAILS, elem_id="selection-details")
    with gr.Row():
        trigger = gr.Textbox(label="Trigger word", placeholder="e.g. mila_v1", scale=2)
        export = gr.Button("Export dataset for training", variant="primary", scale=1)
    exported = gr.Markdown()
    next_step = gr.Button(wording.NEXT_TRAINING, visible=False)
    ids = gr.State([])

    def show(state: SelectionState, clicked: str | None = None):
        chosen = set(state.selected)
        items = [(str(i.path), caption(i, i.id in chosen)) for i in state.items]
        label = f"Sheet · {state.count} selected (click an image to select or deselect it)"
        notes = "\n".join(f"- ⚠ {w}" for w in state.warnings)
        item = next((i for i in state.items if i.id == clicked), None)
        text = details(item, item.id in chosen) if item else gr.skip()
        return (gr.update(value=items, label=label), [i.id for i in state.items], state.summary(), notes, "",
                text)

    count = 6  # gallery, ids, summary, warnings, message, detail

    @beside(count, 4)
    def refresh(character_id):
        if not character_id:
            return [], [], wording.NO_CHARACTER, "", "", wording.SELECTION_DETAILS
        return show(studio.selection.state(character_id))

    @beside(count, 4)
    def toggle(character_id, image_ids, evt: gr.SelectData):
        image_id = image_ids[evt.index]
        return show(studio.selection.toggle(character_id, image_id), clicked=image_id)

    @beside(count, 4)
    def quick_select(character_id):
        return show(studio.selection.quick_select(character_id, SUGGESTED))

    @beside(count, 4)
    def score_faces(character_id):
        return show(studio.selection.score(character_id))

    @beside(count, 4)
    def clear_selection(character_id):
        return show(studio.selection.set_selection(character_id, []))

    @beside(3, 0)
    def export_dataset(character_id, trigger_word):
        dataset = studio.selection.export_dataset(character_id, trigger_word)
        return "", (f"Dataset ready: {dataset['count']} images with captions and a zip "
                    f"(`{dataset['zip']}`)."), gr.update(visible=True)

    outputs = [gallery, ids, summary, warnings, message, detail]
    gallery.select(toggle, [ctx.character, ids], outputs, api_visibility="private")
    quick.click(quick_select, [ctx.character], outputs, api_visibility="private")
    score.click(score_faces, [ctx.character], outputs, api_visibility="private")
    clear.click(clear_selection, [ctx.character], outputs, api_visibility="private")
    export.click(export_dataset, [ctx.character, trigger], [message, exported, next_step], api_visibility="private")
    next_step.click(lambda: gr.Tabs(selected="training"), None, [ctx.tabs], api_visibility="private")
    ctx.character.change(refresh, [ctx.character], outputs, api_visibility="private")
    return refresh, [ctx.character], outputs
