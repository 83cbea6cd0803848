"""Tab 2 · Character sheet: 30 Kontext variations with live progress; stop and resume any time."""
from __future__ import annotations

import gradio as gr

from ..services.costs import parse_cap
from ..services.sheet import SheetOptions
from . import wording
from .common import UIContext, beside, estimate_text, job_logs, progress_html


def render(ctx: UIContext, timer: gr.Timer) -> None:
    studio = ctx.studio
    gr.Markdown(wording.SHEET_HELP)
    with gr.Row():
        start = gr.Button("Generate character sheet", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        gate = gr.Checkbox(value=True, label="Regenerate variations whose face drifts (identity gate)")
        tries = gr.Slider(1, 5, value=3, step=1, label="Tries per variation")
        cap = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
    estimate = gr.Markdown(visible=ctx.paid, elem_classes=["ls-estimate"])
    progress = gr.HTML(progress_html(None))
    done = gr.Markdown(wording.SHEET_DONE, visible=False)
    next_step = gr.Button(wording.NEXT_SELECTION, variant="primary", visible=False)
    message = gr.HTML()
    gallery = gr.Gallery(label="Character sheet", columns=6, height=420, allow_preview=True)
    logs = gr.Textbox(label="Log", lines=4, max_lines=8, autoscroll=True)

    def latest(character_id):
        if not character_id:
            return None
        jobs = [j for j in studio.jobs.list("sheet") if j.params.get("character_id") == character_id]
        return jobs[-1] if jobs else None

    def options(gate_on, max_tries, cap_usd) -> SheetOptions:
        return SheetOptions(gate=bool(gate_on), max_tries=int(max_tries or 1), max_usd=parse_cap(cap_usd))

    def expected(character_id, gate_on, max_tries, cap_usd):
        """The cost of the images still missing, as the form would make them ("" off Replicate)."""
        if not ctx.paid or not character_id:
            return ""
        try:
            return estimate_text(studio.sheet.estimate(character_id, options(gate_on, max_tries, cap_usd)))
        except Exception:  # noqa: BLE001 - an estimate must never break the tab; the start says why
            return ""

    count = 7  # progress, gallery, logs, message, done, next_step, estimate

    @beside(count, 3)
    def refresh(character_id, *form):
        if not character_id:
            return (progress_html(None), [], "", "", gr.update(visible=False), gr.update(visible=False),
                    expected(character_id, *form))
        job = latest(character_id)
        items = studio.characters.images(character_id, "sheet")
        finished = bool(job and job.status == "succeeded")
        return (progress_html(job), [(str(i.path), f"{i.category} · {i.caption}") for i in items], job_logs(job),
                gr.skip(), gr.update(visible=finished), gr.update(visible=finished), expected(character_id, *form))

    @beside(count, 3)
    def begin(character_id, gate_on, max_tries, cap_usd):
        studio.sheet.start(character_id, options(gate_on, max_tries, cap_usd))
        shown = refresh(character_id, gate_on, max_tries, cap_usd)
        return (*shown[:3], "", *shown[4:])

    @beside(count, 3)
    def halt(character_id, *form):
        job = latest(character_id)
        if job and not job.done:
            studio.jobs.cancel(job.id)
        return refresh(character_id, *form)

    form = [ctx.character, gate, tries, cap]
    outputs = [progress, gallery, logs, message, done, next_step, estimate]
    start.click(begin, form, outputs, api_visibility="private")
    stop.click(halt, form, outputs, api_visibility="private")
    next_step.click(lambda: gr.Tabs(selected="selection"), None, [ctx.tabs], api_visibility="private")
    timer.tick(refresh, form, outputs, api_visibility="private", show_progress="hidden")
    ctx.character.change(refresh, form, outputs, api_visibility="private")
    if ctx.paid:
        for trigger in (gate.change, tries.change, cap.change):
            trigger(expected, form, [estimate], api_visibility="private", show_progress="hidden")
    ctx.remember("sheet.gate", gate)
    ctx.remember("sheet.tries", tries)
    if ctx.paid:
        ctx.remember("sheet.max_usd", cap)
