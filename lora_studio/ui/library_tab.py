"""Library & generate: every LoRA with its metadata and scores; import, rename, delete, export, use."""
from __future__ import annotations

import pandas as pd
import gradio as gr

from ..services.generate import GenerateOptions
from ..services.library import scale_text
from ..services.strength_analysis import VERDICT_WORDS
from . import wording
from .common import (UIContext, beside, fresh_choices, friendly, job_choices, lora_choices, parse_weights,
                     progress_html, upload_paths)
from .files import deliver, discard_uploads, shown
from .owner import page_view, requester

COLUMNS = ["name", "trigger", "source", "rank", "scale (alpha/rank)", "steps", "recommended strength", "strength test",
           "id"]


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


def render(ctx: UIContext, timer: gr.Timer):
    studio = ctx.studio
    gr.Markdown(wording.LIBRARY_HELP)
    library = gr.Dataframe(table(studio), label="LoRAs", interactive=False)
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Import a Flux LoRA (.safetensors)", file_types=[".safetensors"])
            import_name = gr.Textbox(label="Name")
            import_trigger = gr.Textbox(label="Trigger word (optional)")
            do_import = gr.Button("Import")
        with gr.Column():
            pick = gr.Dropdown(label="LoRA", choices=lora_choices(studio))
            new_name = gr.Textbox(label="New name")
            with gr.Row():
                rename = gr.Button("Rename")
                delete = gr.Button("Delete", variant="stop")
                export = gr.Button("Export zip")
            exported = gr.File(label="Export", interactive=False)
            details = gr.Markdown()
            samples = gr.Gallery(label="Training samples", columns=4, height=160)
    status = gr.Markdown()
    gr.Markdown("### Generate")
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", value="photo of the character at the beach")
            loras = gr.Textbox(label="LoRAs (name:weight, …)", placeholder="mila-v1:0.9")
            task = gr.Dropdown(label="…or a task", choices=[""] + sorted(studio.generator.tasks()), value="")
            seed = gr.Number(label="Seed", value=0, precision=0)
            go_fast = gr.Checkbox(False, label=wording.GO_FAST_LABEL, visible=ctx.paid)
            go = gr.Button("Generate", variant="primary")
        with gr.Column(scale=2):
            progress = gr.HTML(progress_html(None))
            image = gr.Image(label="Result", type="filepath", interactive=False)
    with gr.Accordion("All jobs", open=False):
        jobs_table = gr.Dataframe(jobs_frame(studio, page_view(studio)), interactive=False)  # in /config: public
        with gr.Row():
            job_pick = gr.Dropdown(label="Job", choices=job_choices(recent_jobs(studio, page_view(studio))))
            cancel_job = gr.Button("Cancel job", variant="stop")
            resume_job = gr.Button("Resume job")
    job_id = gr.State(None)
    shown_jobs = gr.State(None)

    @friendly
    def job_action(action, picked_job, request):
        if not picked_job:
            raise gr.Error("Pick a job first.")
        who = requester(studio, request)
        getattr(studio.jobs, action)(picked_job, seen_by=who)
        return jobs_frame(studio, who), gr.update(choices=job_choices(recent_jobs(studio, who)))

    def cancel_picked(picked_job, request: gr.Request):
        return job_action("cancel", picked_job, request)

    def resume_picked(picked_job, request: gr.Request):
        return job_action("resume", picked_job, request)

    cancel_job.click(cancel_picked, [job_pick], [jobs_table, job_pick], api_visibility="private")
    resume_job.click(resume_picked, [job_pick], [jobs_table, job_pick], api_visibility="private")

    def lora_views():
        choices = lora_choices(studio)
        return table(studio), gr.update(choices=choices, value=choices[-1][1] if choices else None)

    def refresh(request: gr.Request):
        who = requester(studio, request)
        return (*lora_views(), jobs_frame(studio, who), gr.update(choices=job_choices(recent_jobs(studio, who))))

    @friendly
    def import_lora(file, name, trigger):
        if file is None:
            raise gr.Error("Choose a .safetensors file first.")
        try:
            record = studio.library.import_file(upload_paths(file)[0], name, trigger)
        finally:
            discard_uploads(upload_paths(file))
        return (*lora_views(), f"Imported **{record['name']}** ({record['metadata'].get('format')} format; "
                               f"scale: {scale_text(record) or 'not read'}).")

    @friendly
    def rename_lora(lora_id, name):
        studio.library.rename(lora_id, name)
        return (*lora_views(), "Renamed.")

    @friendly
    def delete_lora(lora_id):
        studio.library.delete(lora_id)
        return (*lora_views(), "Deleted.")

    @friendly
    def export_lora(lora_id):
        record = studio.library.get(lora_id)
        return deliver(studio.library.export(record["id"]), f"{record['id']}.zip")

    @friendly
    def generate(text, lora_text, task_name, seed_value, fast):
        job = studio.generator.start(GenerateOptions(prompt=text, loras=parse_weights(lora_text),
                                                     seed=seed_value or 0, task=task_name or None,
                                                     go_fast=bool(fast)))
        return job.id, *show(job.id)

    def show(current):
        job = studio.jobs.get(current) if current else None
        return progress_html(job), (shown(studio, job.outputs.get("image")) if job else None)

    @beside(2, 0)
    def describe(lora_id):
        if not lora_id:
            return "", []
        record = studio.library.get(lora_id)
        meta, scores = record.get("metadata", {}), record.get("scores", {})
        lines = [f"**{record['name']}** · trigger `{record.get('trigger') or '—'}` · {record.get('source')}"]
        facts = {k: meta.get(k) for k in ("base_model", "steps", "rank", "resolution", "final_loss",
                                             "best_checkpoint", "format") if meta.get(k) is not None}
        if facts:
            lines.append(" · ".join(f"{k.replace('_', ' ')}: {v:.4g}" if isinstance(v, float)
                                    else f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()))
        if scale_text(record):
            lines.append(f"Scale: {scale_text(record)}")
        if scores.get("reason"):
            lines.append(f"Strength test: {scores['reason']}")
        return "\n\n".join(lines), shown(studio, [str(p) for p in studio.library.samples(lora_id)])

    pick.change(describe, [pick], [details, samples], api_visibility="private")
    changed = [library, pick, status]
    do_import.click(import_lora, [upload, import_name, import_trigger], changed, api_visibility="private")
    rename.click(rename_lora, [pick, new_name], changed, api_visibility="private")
    delete.click(delete_lora, [pick], changed, api_visibility="private")
    export.click(export_lora, [pick], [exported], api_visibility="private")
    go.click(generate, [prompt, loras, task, seed, go_fast], [job_id, progress, image], api_visibility="private")
    timer.tick(show, [job_id], [progress, image], api_visibility="private", show_progress="hidden")

    def jobs_tick(picked_job, shown, request: gr.Request):
        """Every job's status as it is now; nothing is sent while nothing changed."""
        who = requester(studio, request)
        jobs = recent_jobs(studio, who)
        signature = repr([(j.id, j.status, round(j.progress, 2)) for j in jobs])
        if signature == (shown or {}).get("table"):
            return gr.skip(), gr.skip(), shown
        update, listed = fresh_choices(job_choices(jobs), picked_job, (shown or {}).get("choices"),
                                       pick_latest=False)
        return jobs_frame(studio, who), update, {"table": signature, "choices": listed}

    timer.tick(jobs_tick, [job_pick, shown_jobs], [jobs_table, job_pick, shown_jobs], api_visibility="private",
               show_progress="hidden")
    ctx.remember("generate.prompt", prompt)
    if ctx.paid:
        ctx.remember("generate.go_fast", go_fast)
    return refresh, [], [library, pick, jobs_table, job_pick]
