"""Selection · captions: what each selected image trains on, edited one by one or by find/replace, and
the captioner run over the set as a job.

A caption is shown with the trigger word typed in the Selection tab (the `[trigger]` placeholder while
it is empty or not a valid word, so a half-typed word never breaks a click); edits and replacements
keep the word in every caption (services/captions.py). Clicking an image to select it opens its caption
here. Like the selection itself, captions are the shared workspace's: a visitor on a shared link edits
them as they select images, every value checked at the door.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ..jobs import JobView
from ..services import limits
from ..services.caption_rules import retrigger
from ..services.captions import BUILT_IN, KIND as CAPTION_KIND, CaptionRow
from ..services.selection import validate_trigger
from ..services.settings import CAPTIONERS
from ..studio import Studio
from . import wording
from .common import UIContext, progress_html
from .events import KEEP, Reply, expose, notice

COLUMNS = ["#", "image", "caption", "written by", "identity words"]
AUTOMATIC = ""


class CaptionParts:
    """The captions panel's components, by the names its replies use."""

    captions: gr.Dataframe
    caption_pick: gr.Dropdown
    caption_text: gr.Textbox
    save_caption: gr.Button
    reset_caption: gr.Button
    find: gr.Textbox
    replacement: gr.Textbox
    replace: gr.Button
    captioner: gr.Dropdown
    keep_edited: gr.Checkbox
    caption_run: gr.Button
    caption_note: gr.Markdown
    caption_progress: gr.HTML
    caption_message: gr.HTML
    caption_job: gr.State
    caption_trigger: gr.State  # the word the panel last showed the captions with
    caption_poll: gr.Timer


@dataclass
class CaptionsView(Reply):
    """The set's captions, the one being edited and the captioner's job; errors show in `caption_message`."""

    MESSAGE = "caption_message"
    captions: pd.DataFrame = KEEP
    caption_pick: Any = KEEP
    caption_text: str = KEEP
    caption_message: str = KEEP
    caption_note: Any = KEEP
    caption_job: str | None = KEEP
    caption_trigger: str = KEEP
    caption_progress: str = KEEP
    caption_poll: Any = KEEP


def shown_trigger(trigger) -> str:
    """The word captions are shown with: the one typed when it is valid, else none (the placeholder)."""
    try:
        return validate_trigger(trigger) if limits.text(trigger, "The trigger word", 64) else ""
    except Exception:  # noqa: BLE001 - display only: the export and the edits say what is wrong with it
        return ""


def frame(rows: list[CaptionRow], labels: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([[n, labels.get(r.image_id, r.image_id), r.caption,
                          r.source + (f" ({r.model})" if r.model else ""), ", ".join(r.identity)]
                         for n, r in enumerate(rows, 1)], columns=COLUMNS)


def image_labels(studio: Studio, character_id: str) -> dict[str, str]:
    return {i.id: f"{i.category} · {i.caption}" for i in studio.characters.images(character_id, "sheet")}


def caption_views(studio: Studio, character_id, trigger, picked=None, clicked=None) -> CaptionsView:
    """The table and the picker for the character's selected images; the picked image stays picked
    while it is selected, and an image just clicked into the set is picked."""
    if not character_id:
        return CaptionsView(captions=frame([], {}), caption_pick=gr.update(choices=[], value=None), caption_text="")
    rows = studio.captions.rows(character_id, shown_trigger(trigger))
    labels = image_labels(studio, character_id)
    ids = [r.image_id for r in rows]
    value = clicked if clicked in ids else (picked if picked in ids else (ids[0] if ids else None))
    choices = [(f"{n} · {labels.get(i, i)}", i) for n, i in enumerate(ids, 1)]
    row = next((r for r in rows if r.image_id == value), None)
    return CaptionsView(captions=frame(rows, labels), caption_pick=gr.update(choices=choices, value=value),
                        caption_text=row.caption if row else "", caption_message=identity_note(row))


def identity_note(row: CaptionRow | None) -> str:
    if row is None or not row.identity:
        return ""
    return notice(wording.CAPTION_IDENTITY.format(words=", ".join(row.identity)))


# ---- the page's events -----------------------------------------------------------------------------
def captions_show(studio: Studio, character_id, trigger, picked, text, shown_with) -> CaptionsView:
    """The trigger word was typed (Enter, or the box left): the captions with the new word. A caption
    being edited keeps the user's unsaved words, only the word in it changes; the same word again
    (the box left after Enter) changes nothing."""
    word = shown_trigger(trigger)
    if word == (shown_with or ""):
        return CaptionsView()
    view = caption_views(studio, character_id, trigger, picked)
    if text and isinstance(text, str) and view.caption_text:
        view.caption_text = retrigger(limits.text(text, "The caption", 4000), shown_with or "", word)
    view.caption_trigger = word
    return view


def captions_pick(studio: Studio, character_id, picked, trigger) -> CaptionsView:
    if not character_id or not picked:
        return CaptionsView(caption_text="", caption_message="")
    row = next((r for r in studio.captions.rows(character_id, shown_trigger(trigger))
                if r.image_id == limits.record_id(picked, "image id")), None)
    if row is None:
        return CaptionsView(caption_text="", caption_message="")
    return CaptionsView(caption_text=row.caption, caption_message=identity_note(row))


def captions_save(studio: Studio, character_id, picked, text, trigger) -> CaptionsView:
    if not picked:
        raise gr.Error(wording.CAPTION_PICK_FIRST)
    row = studio.captions.edit(character_id, picked, text, trigger)
    view = caption_views(studio, character_id, trigger, row.image_id)
    view.caption_message = identity_note(row) or notice_ok(wording.CAPTION_SAVED)
    return view


def captions_reset(studio: Studio, character_id, picked, trigger) -> CaptionsView:
    if not picked:
        raise gr.Error(wording.CAPTION_PICK_FIRST)
    studio.captions.reset(character_id, [picked])
    view = caption_views(studio, character_id, trigger, picked)
    view.caption_message = notice_ok(wording.CAPTION_RESET)
    return view


def captions_replace(studio: Studio, character_id, find, replacement, trigger, picked) -> CaptionsView:
    report = studio.captions.replace(character_id, find, replacement, trigger)
    view = caption_views(studio, character_id, trigger, picked)
    view.caption_message = notice_ok(report.text())
    return view


def captions_start(studio: Studio, character_id, model, keep_edited) -> CaptionsView:
    job = studio.captions.start(character_id, model=model or "", keep_edited=keep_edited)
    noise = job.params.get("model") == BUILT_IN
    return CaptionsView(caption_job=job.id, caption_progress=progress_html(job), caption_poll=gr.Timer(active=True),
                        caption_note=gr.update(value=wording.CAPTION_NOISE, visible=True) if noise else KEEP,
                        caption_message="")


def captions_tick(studio: Studio, character_id, current, trigger, picked) -> CaptionsView:
    """While the captioner runs: its progress; when it ends, the captions it wrote."""
    job = caption_job(studio, current)
    if job is None:
        return CaptionsView(caption_poll=gr.Timer(active=False))
    if not job.done:
        return CaptionsView(caption_progress=progress_html(job))
    view = caption_views(studio, character_id, trigger, picked)
    view.caption_progress, view.caption_poll = progress_html(job), gr.Timer(active=False)
    return view


def caption_job(studio: Studio, current) -> JobView | None:
    if not current:
        return None
    job = studio.jobs.get(limits.record_id(current, "job id"))
    return job if job.kind == CAPTION_KIND else None


def notice_ok(text: str) -> str:
    return f"<div class='ls-ok' role='status'>{html.escape(text)}</div>"


# ---- named endpoints (gradio_client) ------------------------------------------------------------
def caption_rows(studio: Studio, character_id: str, trigger: str = "") -> list:
    return [r.to_dict() for r in studio.captions.rows(character_id, trigger)]


def edit_caption(studio: Studio, character_id: str, image_id: str, caption: str, trigger: str = "") -> dict:
    return studio.captions.edit(character_id, image_id, caption, trigger).to_dict()


def replace_captions(studio: Studio, character_id: str, find: str, replacement: str, trigger: str = "") -> dict:
    report = studio.captions.replace(character_id, find, replacement, trigger)
    return {"changed": report.changed, "text": report.text(), "rows": [r.to_dict() for r in report.rows]}


def start_captioning(studio: Studio, character_id: str, model: str = "", keep_edited: bool = True) -> dict:
    job = studio.captions.start(character_id, model=model, keep_edited=keep_edited)
    return {"job_id": job.id, "status": job.status, "model": job.params.get("model")}


# ---- layout and wiring ----------------------------------------------------------------------------
def captioner_choices() -> list[tuple[str, str]]:
    return ([("Automatic: the downloaded captioner (the built-in one on the tiny engine)", AUTOMATIC),
             ("Built in (tiny, random weights: noise)", BUILT_IN)] + [(e.title, e.repo_id) for e in CAPTIONERS])


def render(ctx: UIContext) -> CaptionParts:
    c = CaptionParts()
    with gr.Accordion("Training captions of the selected images", open=True):
        gr.Markdown(wording.CAPTIONS_HELP)
        c.captions = gr.Dataframe(frame([], {}), interactive=False, wrap=True, elem_id="caption-table")
        with gr.Row():
            c.caption_pick = gr.Dropdown(label="Image", choices=[], scale=2, elem_id="caption-pick")
            c.caption_text = gr.Textbox(label="Caption", lines=2, scale=4, elem_id="caption-text")
            with gr.Column(scale=1, min_width=160):
                c.save_caption = gr.Button("Save caption", variant="primary")
                c.reset_caption = gr.Button("Back to the prompt's caption", size="sm")
        with gr.Row():
            c.find = gr.Textbox(label="Find (in every selected caption)", placeholder="close-up portrait", scale=2)
            c.replacement = gr.Textbox(label="Replace with", placeholder="headshot", scale=2)
            c.replace = gr.Button("Replace in all", scale=1)
        with gr.Row():
            c.captioner = gr.Dropdown(label="Captioner", choices=captioner_choices(), value=AUTOMATIC, scale=3)
            c.keep_edited = gr.Checkbox(True, label="Keep the captions I edited", scale=1)
            c.caption_run = gr.Button("Caption these images", scale=1, elem_id="caption-run")
        c.caption_note = gr.Markdown(wording.CAPTION_NOISE, visible=ctx.studio.draws_noise(), elem_id="caption-note")
        c.caption_progress = gr.HTML(elem_id="caption-progress")
        c.caption_message = gr.HTML(elem_id="caption-message")
        c.caption_job, c.caption_trigger = gr.State(None), gr.State("")
        c.caption_poll = gr.Timer(1.0, active=False)
    return c


def listen(ctx: UIContext, c: CaptionParts, character, trigger) -> None:
    """Wired after the Selection tab's own events (their indices stay as they were)."""
    table = CaptionsView.to(c, "captions", "caption_pick", "caption_text", "caption_message")
    ctx.on([trigger.submit, trigger.blur], captions_show,
           [character, trigger, c.caption_pick, c.caption_text, c.caption_trigger],
           CaptionsView.to(c, "captions", "caption_pick", "caption_text", "caption_message", "caption_trigger"))
    ctx.on(c.caption_pick.input, captions_pick, [character, c.caption_pick, trigger],
           CaptionsView.to(c, "caption_text", "caption_message"))
    ctx.on(c.save_caption.click, captions_save, [character, c.caption_pick, c.caption_text, trigger], table)
    ctx.on(c.reset_caption.click, captions_reset, [character, c.caption_pick, trigger], table)
    ctx.on(c.replace.click, captions_replace, [character, c.find, c.replacement, trigger, c.caption_pick], table)
    ctx.on(c.caption_run.click, captions_start, [character, c.captioner, c.keep_edited],
           CaptionsView.to(c, "caption_job", "caption_progress", "caption_poll", "caption_note", "caption_message"))
    ctx.on(c.caption_poll.tick, captions_tick, [character, c.caption_job, trigger, c.caption_pick],
           CaptionsView.to(c, "captions", "caption_pick", "caption_text", "caption_message", "caption_progress",
                           "caption_poll"), show_progress="hidden")
    expose(ctx.studio, caption_rows, edit_caption, replace_captions, start_captioning)
