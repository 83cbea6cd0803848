"""Tab 2 · Character sheet: 30 Kontext variations with live progress; stop and resume any time."""
from __future__ import annotations

import gradio as gr

from ..services.sheet import SheetOptions
from . import wording
from .common import UIContext, friendly, job_logs, progress_html


def render(ctx: UIContext, timer: gr.Timer) -> None:
    studio = ctx.studio
    gr.Markdown(wording.SHEET_HELP)
    with gr.Row():
        start = gr.Button("Generate character sheet", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        gate = gr.Checkbox(value=True, label="Regenerate variations whose face drifts (identity gate)")
        tries = gr.Slider(1, 5, value=3, step=1, label="Tries per variation")
    progress = gr.HTML(progress_html(None))
    gallery = gr.Gallery(label="Character sheet", columns=6, height=420, allow_preview=True)
    logs = gr.Textbox(label="Log", lines=4, max_lines=8, autoscroll=True)

    def latest(character_id):
        if not character_id:
            return None
        jobs = [j for j in studio.jobs.list("sheet") if j.params.get("character_id") == character_id]
        return jobs[-1] if jobs else None

    def refresh(character_id):
        if not character_id:
            return progress_html(None), [], ""
        job = latest(character_id)
        items = studio.characters.images(character_id, "sheet")
        return progress_html(job), [(str(i.path), f"{i.category} · {i.caption}") for i in items], job_logs(job)

    @friendly
    def begin(character_id, gate_on, max_tries):
        studio.sheet.start(character_id, SheetOptions(gate=bool(gate_on), max_tries=int(max_tries)))
        return refresh(character_id)

    @friendly
    def halt(character_id):
        job = latest(character_id)
        if job and not job.done:
            studio.jobs.cancel(job.id)
        return refresh(character_id)

    outputs = [progress, gallery, logs]
    start.click(begin, [ctx.character, gate, tries], outputs, api_visibility="private")
    stop.click(halt, [ctx.character], outputs, api_visibility="private")
    timer.tick(refresh, [ctx.character], outputs, api_visibility="private", show_progress="hidden")
    ctx.character.change(refresh, [ctx.character], outputs, api_visibility="private")
