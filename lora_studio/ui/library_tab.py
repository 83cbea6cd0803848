"""Library & generate: every LoRA with its metadata and scores; import (a file or from the Hub), rename,
delete, export, publish to the Hub (ui/library_hub.py), use."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import gradio as gr

from ..services.generate import GenerateOptions
from ..services.library import family_title, scale_text
from ..services.strength_analysis import VERDICT_WORDS
from ..studio import Studio
from . import library_hub, wording
from .common import UIContext, fresh_choices, job_choices, lora_choices, parse_weights, progress_html, upload_paths
from .events import KEEP, OnOpen, Reply
from .files import deliver, discard_uploads, shown
from .owner import owner_only, page_view, requester

COLUMNS = ["name", "trigger", "source", "rank", "scale (alpha/rank)", "steps", "recommended strength", "strength test",
           "id"]


class LibraryParts:
    """The tab's components, by the names its replies use."""

    library: gr.Dataframe
    upload: gr.File
    import_name: gr.Textbox
    import_trigger: gr.Textbox
    do_import: gr.Button
    pick: gr.Dropdown
    new_name: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    export: gr.Button
    exported: gr.File
    details: gr.Markdown
    samples: gr.Gallery
    status: gr.Markdown
    prompt: gr.Textbox
    loras: gr.Textbox
    task: gr.Dropdown
    seed: gr.Number
    size: gr.Dropdown
    width: gr.Slider
    height: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    go_fast: gr.Checkbox
    go: gr.Button
    progress: gr.HTML
    image: gr.Image
    jobs_table: gr.Dataframe
    job_pick: gr.Dropdown
    cancel_job: gr.Button
    resume_job: gr.Button
    job_id: gr.State
    shown_jobs: gr.State
    hub: library_hub.ImportParts
    publishing: library_hub.PublishParts


@dataclass
class LibraryView(Reply):
    """The LoRA table and picker, the picked LoRA's details, the generate panel and the jobs list.
    A failure to describe a LoRA shows in `details`; the others pop up."""

    MESSAGE = "details"
    library: pd.DataFrame = KEEP
    pick: Any = KEEP
    status: str = KEEP
    details: str = KEEP
    samples: list = KEEP
    job_id: str | None = KEEP
    progress: str = KEEP
    image: str | None = KEEP
    jobs_table: pd.DataFrame = KEEP
    job_pick: Any = KEEP
    shown_jobs: Any = KEEP
    size: Any = KEEP
    width: Any = KEEP
    height: Any = KEEP
    steps: Any = KEEP
    guidance: Any = KEEP


FORM_FIELDS = ("size", "width", "height", "steps", "guidance")


def table(studio) -> pd.DataFrame:
    rows = []
    for r in studio.library.list():
        meta, scores = r.get("metadata", {}), r.get("scores", {})
        rows.append([r["name"], r.get("trigger", ""), r.get("source", ""), meta.get("rank"), scale_text(r),
                     meta.get("steps"), scores.get("recommended_strength"),
                     VERDICT_WORDS.get(scores.get("verdict"), "not run"), r["id"]])
    return pd.DataFrame(rows, columns=COLUMNS)


def recent_jobs(studio, who) -> list:
    """The jobs `who` may see (the owner's are the owner's: lora_studio/job_access.py), newest first."""
    return list(reversed(studio.jobs.list(seen_by=who)))


def jobs_frame(studio, who) -> pd.DataFrame:
    rows = [[j.title, j.status, f"{100 * j.progress:.0f}%", j.error or j.message, j.id]
            for j in recent_jobs(studio, who)]
    return pd.DataFrame(rows, columns=["job", "status", "progress", "message", "id"])


def job_action(studio: Studio, action: str, picked_job, request: gr.Request = None) -> LibraryView:
    """Cancel or resume the job picked in the list (bound to the action), if the asker may."""
    if not picked_job:
        raise gr.Error("Pick a job first.")
    who = requester(studio, request)
    getattr(studio.jobs, action)(picked_job, seen_by=who)
    return LibraryView(jobs_table=jobs_frame(studio, who),
                       job_pick=gr.update(choices=job_choices(recent_jobs(studio, who))))


def lora_views(studio: Studio, status=KEEP) -> LibraryView:
    choices = lora_choices(studio)
    return LibraryView(library=table(studio), status=status,
                       pick=gr.update(choices=choices, value=choices[-1][1] if choices else None))


def steps_info(form) -> str | None:
    return wording.STEPS_DRAWN.format(steps=form.drawn_steps) if form.drawn_steps else None


def form_bounds(studio: Studio, width=None, height=None, steps=None, guidance=None) -> LibraryView:
    """The generate form's sizes and bounds as this engine serves them now (an engine switch changes
    them); a value the new bounds no longer take goes back to the family's default."""
    form = studio.generator.form()

    def slider(value, low, high, default, step):
        fits = (isinstance(value, (int, float)) and low <= value <= high
                and abs((value - low) / step - round((value - low) / step)) < 1e-6)
        return gr.update(minimum=low, maximum=high, step=step, **({} if fits else {"value": default}))

    sides = (slider(width, form.min_side, form.max_side, form.width, form.multiple),
             slider(height, form.min_side, form.max_side, form.height, form.multiple))
    moved = any("value" in side for side in sides)  # back to the default size: the picker says so too
    return LibraryView(size=gr.update(choices=form.size_choices(), **({"value": f"{form.width}x{form.height}"}
                                                                     if moved else {})),
                       width=sides[0], height=sides[1],
                       steps={**slider(steps, 1, form.max_steps, form.steps, 1), "info": steps_info(form)},
                       guidance=slider(guidance, 0, form.max_guidance, form.guidance, 0.1))


def refresh(studio: Studio, width=None, height=None, steps=None, guidance=None,
            request: gr.Request = None) -> LibraryView:
    view, who = lora_views(studio), requester(studio, request)
    view.jobs_table, view.job_pick = jobs_frame(studio, who), gr.update(choices=job_choices(recent_jobs(studio, who)))
    bounds = form_bounds(studio, width, height, steps, guidance)
    for name in FORM_FIELDS:
        setattr(view, name, getattr(bounds, name))
    return view


def pick_size(studio: Studio, value) -> LibraryView:
    """One of the family's sizes into the width and height."""
    width, height = studio.generator.form().size(value)
    return LibraryView(width=width, height=height)


def import_lora(studio: Studio, file, name, trigger) -> LibraryView:
    if file is None:
        raise gr.Error("Choose a .safetensors file first.")
    try:
        record = studio.library.import_file(upload_paths(file)[0], name, trigger)
    finally:
        discard_uploads(upload_paths(file))
    return lora_views(studio, f"Imported **{record['name']}** ({record['metadata'].get('format')} format; "
                              f"scale: {scale_text(record) or 'not read'}).")


@owner_only
def hub_imported(studio: Studio, lora_id) -> LibraryView:
    """A Hub import finished (ui/library_hub.py): the list shows it, picked."""
    if not lora_id:
        return LibraryView()
    record = studio.library.get(lora_id)
    view = lora_views(studio, f"Imported **{record['name']}** from the Hub (scale: {scale_text(record) or 'not read'}).")
    view.pick = gr.update(choices=lora_choices(studio), value=record["id"])
    return view


def rename_lora(studio: Studio, lora_id, name) -> LibraryView:
    studio.library.rename(lora_id, name)
    return lora_views(studio, "Renamed.")


def delete_lora(studio: Studio, lora_id) -> LibraryView:
    studio.library.delete(lora_id)
    return lora_views(studio, "Deleted.")


def export_lora(studio: Studio, lora_id) -> str:
    record = studio.library.get(lora_id)
    return deliver(studio.library.export(record["id"]), f"{record['id']}.zip")


def show(studio: Studio, current) -> LibraryView:
    job = studio.jobs.get(current) if current else None
    return LibraryView(progress=progress_html(job), image=shown(studio, job.outputs.get("image")) if job else None)


def generate(studio: Studio, text, lora_text, task_name, seed_value, fast, width=None, height=None, steps=None,
             guidance=None) -> LibraryView:
    job = studio.generator.start(GenerateOptions(prompt=text, loras=parse_weights(lora_text), seed=seed_value or 0,
                                                 task=task_name or None, go_fast=bool(fast), width=width,
                                                 height=height, steps=steps, guidance=guidance))
    view = show(studio, job.id)
    view.job_id = job.id
    return view


def describe(studio: Studio, lora_id) -> LibraryView:
    if not lora_id:
        return LibraryView(details="", samples=[])
    record = studio.library.get(lora_id)
    meta, scores = record.get("metadata", {}), record.get("scores", {})
    lines = [f"**{record['name']}** · trigger `{record.get('trigger') or '—'}` · {record.get('source')}"]
    facts = {k: meta.get(k) for k in ("base_model", "steps", "rank", "resolution", "final_loss",
                                         "best_checkpoint", "format") if meta.get(k) is not None}
    facts = {"family": family_title(record), **facts}
    if facts:
        lines.append(" · ".join(f"{k.replace('_', ' ')}: {v:.4g}" if isinstance(v, float)
                                else f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()))
    if scale_text(record):
        lines.append(f"Scale: {scale_text(record)}")
    if scores.get("reason"):
        lines.append(f"Strength test: {scores['reason']}")
    if (record.get("published") or {}).get("url"):
        lines.append(library_hub.link_text(record["published"]["url"]))
    return LibraryView(details="\n\n".join(lines),
                       samples=shown(studio, [str(p) for p in studio.library.samples(lora_id)]))


def jobs_tick(studio: Studio, picked_job, listed, request: gr.Request = None) -> LibraryView:
    """Every job's status the asker may see, as it is now; nothing is sent while nothing changed."""
    who = requester(studio, request)
    jobs = recent_jobs(studio, who)
    signature = repr([(j.id, j.status, round(j.progress, 2)) for j in jobs])
    if signature == (listed or {}).get("table"):
        return LibraryView(shown_jobs=listed)
    update, choices = fresh_choices(job_choices(jobs), picked_job, (listed or {}).get("choices"), pick_latest=False)
    return LibraryView(jobs_table=jobs_frame(studio, who), job_pick=update,
                       shown_jobs={"table": signature, "choices": choices})


def render(ctx: UIContext) -> LibraryParts:
    studio = ctx.studio
    p = LibraryParts()
    gr.Markdown(wording.LIBRARY_HELP)
    p.library = gr.Dataframe(table(studio), label="LoRAs", interactive=False)
    with gr.Row():
        with gr.Column():
            p.upload = gr.File(label="Import a Flux LoRA (.safetensors)", file_types=[".safetensors"])
            p.import_name = gr.Textbox(label="Name")
            p.import_trigger = gr.Textbox(label="Trigger word (optional)")
            p.do_import = gr.Button("Import")
            p.hub = library_hub.render_import(ctx)
        with gr.Column():
            p.pick = gr.Dropdown(label="LoRA", choices=lora_choices(studio))
            p.new_name = gr.Textbox(label="New name")
            with gr.Row():
                p.rename = gr.Button("Rename")
                p.delete = gr.Button("Delete", variant="stop")
                p.export = gr.Button("Export zip")
            p.exported = gr.File(label="Export", interactive=False)
            p.details = gr.Markdown()
            p.samples = gr.Gallery(label="Training samples", columns=4, height=160)
            p.publishing = library_hub.render_publish(ctx)
    p.status = gr.Markdown()
    gr.Markdown("### Generate")
    with gr.Row():
        with gr.Column(scale=2):
            p.prompt = gr.Textbox(label="Prompt", value="photo of the character at the beach")
            p.loras = gr.Textbox(label="LoRAs (name:weight, …)", placeholder="mila-v1:0.9")
            p.task = gr.Dropdown(label="…or a task", choices=[""] + sorted(studio.generator.tasks()), value="")
            p.seed = gr.Number(label="Seed", value=0, precision=0)
            form = studio.generator.form()
            with gr.Row():
                p.size = gr.Dropdown(form.size_choices(), value=f"{form.width}x{form.height}", label="Size",
                                     info=wording.SIZE_INFO, elem_id="generate-size")
                p.width = gr.Slider(form.min_side, form.max_side, value=form.width, step=form.multiple,
                                    label="Width (px)", elem_id="generate-width")
                p.height = gr.Slider(form.min_side, form.max_side, value=form.height, step=form.multiple,
                                     label="Height (px)", elem_id="generate-height")
            with gr.Row():
                p.steps = gr.Slider(1, form.max_steps, value=form.steps, step=1, label="Steps", info=steps_info(form),
                                    elem_id="generate-steps")
                p.guidance = gr.Slider(0, form.max_guidance, value=form.guidance, step=0.1, label="Guidance",
                                       elem_id="generate-guidance")
            p.go_fast = gr.Checkbox(False, label=wording.GO_FAST_LABEL, visible=ctx.paid)
            p.go = gr.Button("Generate", variant="primary")
        with gr.Column(scale=2):
            p.progress = gr.HTML(progress_html(None))
            p.image = gr.Image(label="Result", type="filepath", interactive=False)
    with gr.Accordion("All jobs", open=False):
        p.jobs_table = gr.Dataframe(jobs_frame(studio, page_view(studio)), interactive=False)  # in /config: public
        with gr.Row():
            p.job_pick = gr.Dropdown(label="Job", choices=job_choices(recent_jobs(studio, page_view(studio))))
            p.cancel_job = gr.Button("Cancel job", variant="stop")
            p.resume_job = gr.Button("Resume job")
    p.job_id = gr.State(None)
    p.shown_jobs = gr.State(None)
    return p


def listen(ctx: UIContext, p: LibraryParts, timer: gr.Timer) -> OnOpen:
    jobs = LibraryView.to(p, "jobs_table", "job_pick")
    ctx.on(p.cancel_job.click, job_action, [p.job_pick], jobs, bound=("cancel",), name="cancel_picked_job")
    ctx.on(p.resume_job.click, job_action, [p.job_pick], jobs, bound=("resume",), name="resume_picked_job")
    ctx.on(p.pick.change, describe, [p.pick], LibraryView.to(p, "details", "samples"))
    changed = LibraryView.to(p, "library", "pick", "status")
    ctx.on(p.do_import.click, import_lora, [p.upload, p.import_name, p.import_trigger], changed)
    ctx.on(p.rename.click, rename_lora, [p.pick, p.new_name], changed)
    ctx.on(p.delete.click, delete_lora, [p.pick], changed)
    ctx.on(p.export.click, export_lora, [p.pick], [p.exported])
    ctx.on(p.go.click, generate, [p.prompt, p.loras, p.task, p.seed, p.go_fast, p.width, p.height, p.steps,
                                  p.guidance], LibraryView.to(p, "job_id", "progress", "image"))
    ctx.on(timer.tick, show, [p.job_id], LibraryView.to(p, "progress", "image"), show_progress="hidden")
    ctx.on(timer.tick, jobs_tick, [p.job_pick, p.shown_jobs], LibraryView.to(p, "jobs_table", "job_pick", "shown_jobs"),
           show_progress="hidden")
    ctx.remember("generate.prompt", p.prompt)
    if ctx.paid:
        ctx.remember("generate.go_fast", p.go_fast)
    library_hub.listen(ctx, p.hub, p.publishing, p.pick, p.import_name, p.import_trigger)
    ctx.on(p.hub.hub_done.change, hub_imported, [p.hub.hub_done], changed)
    ctx.on(p.size.input, pick_size, [p.size], LibraryView.to(p, "width", "height"))
    return OnOpen(refresh, [p.width, p.height, p.steps, p.guidance],
                  LibraryView.to(p, "library", "pick", "jobs_table", "job_pick", *FORM_FIELDS))
