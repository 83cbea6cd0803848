"""Tab 2 · Character sheet: 30 Kontext variations with live progress; stop and resume any time."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from ..jobs import JobView
from ..services.costs import parse_cap
from ..services.sheet import SheetOptions
from ..studio import Studio
from . import wording
from .common import UIContext, estimate_text, job_logs, open_tab, progress_html
from .events import KEEP, Reply


class SheetParts:
    """The tab's components, by the names its replies use."""

    character: gr.Dropdown
    start: gr.Button
    stop: gr.Button
    gate: gr.Checkbox
    tries: gr.Slider
    cap: gr.Number
    estimate: gr.Markdown
    progress: gr.HTML
    done: gr.Markdown
    next_step: gr.Button
    message: gr.HTML
    gallery: gr.Gallery
    logs: gr.Textbox


@dataclass
class SheetView(Reply):
    """The latest sheet job of the character and its images; errors show in `message`."""

    MESSAGE = "message"
    progress: str = KEEP
    gallery: list = KEEP
    logs: str = KEEP
    message: str = KEEP
    done: Any = KEEP
    next_step: Any = KEEP
    estimate: str = KEEP


def latest(studio: Studio, character_id) -> JobView | None:
    if not character_id:
        return None
    jobs = [j for j in studio.jobs.list("sheet") if j.params.get("character_id") == character_id]
    return jobs[-1] if jobs else None


def options(gate_on, max_tries, cap_usd) -> SheetOptions:
    return SheetOptions(gate=bool(gate_on), max_tries=int(max_tries or 1), max_usd=parse_cap(cap_usd))


def expected(studio: Studio, character_id, gate_on, max_tries, cap_usd) -> str:
    """The cost of the images still missing, as the form would make them ("" off Replicate)."""
    if not studio.costs.paid or not character_id:
        return ""
    try:
        return estimate_text(studio.sheet.estimate(character_id, options(gate_on, max_tries, cap_usd)))
    except Exception:  # noqa: BLE001 - an estimate must never break the tab; the start says why
        return ""


def refresh(studio: Studio, character_id, *form) -> SheetView:
    if not character_id:
        return SheetView(progress=progress_html(None), gallery=[], logs="", message="", done=gr.update(visible=False),
                         next_step=gr.update(visible=False), estimate=expected(studio, character_id, *form))
    job = latest(studio, character_id)
    items = studio.characters.images(character_id, "sheet")
    finished = bool(job and job.status == "succeeded")
    return SheetView(progress=progress_html(job), gallery=[(str(i.path), f"{i.category} · {i.caption}") for i in items],
                     logs=job_logs(job), done=gr.update(visible=finished), next_step=gr.update(visible=finished),
                     estimate=expected(studio, character_id, *form))


def begin(studio: Studio, character_id, gate_on, max_tries, cap_usd) -> SheetView:
    studio.sheet.start(character_id, options(gate_on, max_tries, cap_usd))
    return replace(refresh(studio, character_id, gate_on, max_tries, cap_usd), message="")


def halt(studio: Studio, character_id, *form) -> SheetView:
    job = latest(studio, character_id)
    if job and not job.done:
        studio.jobs.cancel(job.id)
    return refresh(studio, character_id, *form)


def render(ctx: UIContext) -> SheetParts:
    p = SheetParts()
    p.character = ctx.character
    gr.Markdown(wording.SHEET_HELP)
    with gr.Row():
        p.start = gr.Button("Generate character sheet", variant="primary")
        p.stop = gr.Button("Stop", variant="stop")
        p.gate = gr.Checkbox(value=True, label="Regenerate variations whose face drifts (identity gate)")
        p.tries = gr.Slider(1, 5, value=3, step=1, label="Tries per variation")
        p.cap = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
    p.estimate = gr.Markdown(visible=ctx.paid, elem_classes=["ls-estimate"])
    p.progress = gr.HTML(progress_html(None), elem_id="sheet-progress")
    p.done = gr.Markdown(wording.SHEET_DONE, visible=False)
    p.next_step = gr.Button(wording.NEXT_SELECTION, variant="primary", visible=False)
    p.message = gr.HTML()
    p.gallery = gr.Gallery(label="Character sheet", columns=6, height=420, allow_preview=True)
    p.logs = gr.Textbox(label="Log", lines=4, max_lines=8, autoscroll=True)
    return p


def listen(ctx: UIContext, p: SheetParts, timer: gr.Timer) -> None:
    form = [p.character, p.gate, p.tries, p.cap]
    shown = SheetView.to(p)
    ctx.on(p.start.click, begin, form, shown)
    ctx.on(p.stop.click, halt, form, shown)
    ctx.on(p.next_step.click, open_tab, None, [ctx.tabs], bound=("selection",), name="open_selection")
    ctx.on(timer.tick, refresh, form, shown, show_progress="hidden")
    ctx.on(p.character.change, refresh, form, shown)
    if ctx.paid:
        for trigger in (p.gate.change, p.tries.change, p.cap.change):
            ctx.on(trigger, expected, form, [p.estimate], show_progress="hidden")
    ctx.remember("sheet.gate", p.gate)
    ctx.remember("sheet.tries", p.tries)
    if ctx.paid:
        ctx.remember("sheet.max_usd", p.cap)
