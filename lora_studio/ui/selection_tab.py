"""Tab 3 · Selection: click to (de)select, quick-select the most consistent set, caption it, export a dataset.

Selected and unselected images look different at a glance: each caption starts with a mark (✓ / ○)
that the gallery also writes into the image's `alt` text, and the CSS in `style.py` keys on it
(unselected dimmed, selected outlined). Errors never blank the gallery: they show beside it. Every
change to the set also refreshes its captions (ui/selection_captions.py), shown with the trigger word.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..services.selection import SUGGESTED, SelectionState
from ..studio import Studio
from . import selection_captions, wording
from .common import UIContext, open_tab
from .events import KEEP, OnOpen, Reply


class SelectionParts:
    """The tab's components, by the names its replies use."""

    character: gr.Dropdown
    quick: gr.Button
    score: gr.Button
    clear: gr.Button
    summary: gr.Markdown
    warnings: gr.Markdown
    gallery: gr.Gallery
    message: gr.HTML
    detail: gr.Markdown
    trigger: gr.Textbox
    export: gr.Button
    exported: gr.Markdown
    next_step: gr.Button
    ids: gr.State
    captioning: selection_captions.CaptionParts
    captions: gr.Dataframe  # the captions panel's (selection_captions.CaptionParts), refreshed with the set
    caption_pick: gr.Dropdown
    caption_text: gr.Textbox


@dataclass
class SelectionView(Reply):
    """The sheet with each image's mark, the set's summary and warnings, and the image last clicked;
    errors show in `message`, beside the gallery, which keeps what it shows."""

    MESSAGE = "message"
    gallery: Any = KEEP
    ids: list = KEEP
    summary: str = KEEP
    warnings: str = KEEP
    message: str = KEEP
    detail: str = KEEP
    exported: str = KEEP
    next_step: Any = KEEP
    captions: Any = KEEP
    caption_pick: Any = KEEP
    caption_text: str = KEEP


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


def show(state: SelectionState, clicked: str | None = None) -> SelectionView:
    chosen = set(state.selected)
    items = [(str(i.path), caption(i, i.id in chosen)) for i in state.items]
    label = f"Sheet · {state.count} selected (click an image to select or deselect it)"
    item = next((i for i in state.items if i.id == clicked), None)
    return SelectionView(gallery=gr.update(value=items, label=label), ids=[i.id for i in state.items],
                         summary=state.summary(), warnings="\n".join(f"- ⚠ {w}" for w in state.warnings),
                         message="", detail=details(item, item.id in chosen) if item else KEEP)


def with_captions(studio: Studio, view: SelectionView, character_id, trigger, picked, clicked=None) -> SelectionView:
    """The set's captions beside it, the image just clicked into the set open for editing."""
    captions = selection_captions.caption_views(studio, character_id, trigger, picked, clicked)
    view.captions, view.caption_pick, view.caption_text = captions.captions, captions.caption_pick, captions.caption_text
    return view


def refresh(studio: Studio, character_id, trigger=None, picked=None) -> SelectionView:
    if not character_id:
        return with_captions(studio, SelectionView(gallery=[], ids=[], summary=wording.NO_CHARACTER, warnings="",
                                                   message="", detail=wording.SELECTION_DETAILS), None, None, None)
    return with_captions(studio, show(studio.selection.state(character_id)), character_id, trigger, picked)


def toggle(studio: Studio, character_id, image_ids, trigger, picked, evt: gr.SelectData) -> SelectionView:
    image_id = image_ids[evt.index]
    return with_captions(studio, show(studio.selection.toggle(character_id, image_id), clicked=image_id),
                         character_id, trigger, picked, clicked=image_id)


def quick_select(studio: Studio, character_id, trigger=None, picked=None) -> SelectionView:
    return with_captions(studio, show(studio.selection.quick_select(character_id, SUGGESTED)), character_id, trigger,
                         picked)


def score_faces(studio: Studio, character_id, trigger=None, picked=None) -> SelectionView:
    return with_captions(studio, show(studio.selection.score(character_id)), character_id, trigger, picked)


def clear_selection(studio: Studio, character_id, trigger=None, picked=None) -> SelectionView:
    return with_captions(studio, show(studio.selection.set_selection(character_id, [])), character_id, trigger,
                         picked)


@dataclass
class ExportView(SelectionView):
    """The export's answer; a refusal (no trigger word, too few images) shows under its button."""

    MESSAGE = "exported"


def export_dataset(studio: Studio, character_id, trigger_word) -> ExportView:
    dataset = studio.selection.export_dataset(character_id, trigger_word)
    return ExportView(message="", exported=(f"Dataset ready: {dataset['count']} images with captions and a zip "
                                            f"(`{dataset['zip']}`)."), next_step=gr.update(visible=True))


def render(ctx: UIContext) -> SelectionParts:
    p = SelectionParts()
    p.character = ctx.character
    gr.Markdown(wording.SELECTION_HELP)
    with gr.Row():
        p.quick = gr.Button(f"Quick-select {SUGGESTED}", variant="primary")
        p.score = gr.Button("Score faces")
        p.clear = gr.Button("Clear selection")
    p.summary = gr.Markdown(elem_id="selection-summary")
    p.warnings = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=4):
            # No floating label: it would cover the first row's ✓ marks (the summary above says the count).
            p.gallery = gr.Gallery(label="Sheet (click to select)", show_label=False, columns=6, height=460,
                                   allow_preview=False, elem_id="selection-gallery")
        with gr.Column(scale=1, min_width=220):
            p.message = gr.HTML(elem_id="selection-message")
            p.detail = gr.Markdown(wording.SELECTION_DETAILS, elem_id="selection-details")
    p.trigger = gr.Textbox(label="Trigger word", placeholder="e.g. mila_v1", elem_id="selection-trigger",
                           info="The word the LoRA learns the face by; every caption holds it.")
    p.captioning = selection_captions.render(ctx)
    p.captions, p.caption_pick = p.captioning.captions, p.captioning.caption_pick
    p.caption_text = p.captioning.caption_text
    p.export = gr.Button("Export dataset for training", variant="primary")
    p.exported = gr.Markdown(elem_id="selection-exported")
    p.next_step = gr.Button(wording.NEXT_TRAINING, visible=False)
    p.ids = gr.State([])
    return p


def listen(ctx: UIContext, p: SelectionParts) -> OnOpen:
    shown = SelectionView.to(p, "gallery", "ids", "summary", "warnings", "message", "detail", "captions",
                             "caption_pick", "caption_text")
    context = [p.trigger, p.caption_pick]  # the captions are shown with the trigger word, the picked one kept
    ctx.on(p.gallery.select, toggle, [p.character, p.ids, *context], shown)
    ctx.on(p.quick.click, quick_select, [p.character, *context], shown)
    ctx.on(p.score.click, score_faces, [p.character, *context], shown)
    ctx.on(p.clear.click, clear_selection, [p.character, *context], shown)
    ctx.on(p.export.click, export_dataset, [p.character, p.trigger],
           ExportView.to(p, "message", "exported", "next_step"))
    ctx.on(p.next_step.click, open_tab, None, [ctx.tabs], bound=("training",), name="open_training")
    ctx.on(p.character.change, refresh, [p.character, *context], shown)
    selection_captions.listen(ctx, p.captioning, p.character, p.trigger)
    return OnOpen(refresh, [p.character, *context], shown)
