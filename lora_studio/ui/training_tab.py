"""Tab 4 · Training: presets, live logs, loss curve, ETA and samples; the job outlives the page."""
from __future__ import annotations

import pandas as pd
import gradio as gr

from ..jobs import JobView
from ..services.training import TrainOptions
from . import wording
from .common import UIContext, friendly, job_choices, job_logs, progress_html
from .files import shown

MEMORY_MODES = ["auto", "full", "checkpointing", "offload", "8bit", "fp8", "nf4"]


def _number(value):
    return None if value in (None, "", 0) else value


def loss_frame(job: JobView | None) -> pd.DataFrame:
    rows = []
    if job:
        for name in ("loss", "loss_smooth"):
            rows += [{"step": s, "value": v, "series": name} for s, v in job.metrics.get(name, []) if s is not None]
    return pd.DataFrame(rows or [{"step": 0, "value": 0.0, "series": "loss"}])


def identity_frame(job: JobView | None) -> pd.DataFrame:
    rows = [{"step": s, "distance": v} for s, v in (job.metrics.get("identity", []) if job else []) if s is not None]
    return pd.DataFrame(rows or [{"step": 0, "distance": None}])


def preset_values(studio, name: str) -> tuple[int, int, float, int]:
    """The preset's numbers, shown in the fields so every value can be edited from there."""
    fields = studio.training.preset_fields(name)
    return fields["steps"], fields["rank"], fields["learning_rate"], fields["resolution"]


def stats_text(job: JobView | None) -> str:
    if not job:
        return wording.NOTHING_RUNNING
    last = {k: v[-1][1] for k, v in job.metrics.items() if v}
    parts = [f"**{job.status}**"]
    if "loss_smooth" in last:
        parts.append(f"loss {last['loss_smooth']:.4f}")
    if "it_per_s" in last:
        parts.append(f"{last['it_per_s']:.2f} it/s")
    if "eta_s" in last and not job.done:
        parts.append(f"ETA {int(last['eta_s']) // 60} min {int(last['eta_s']) % 60} s")
    if "peak_mem_gb" in last:
        parts.append(f"peak memory {last['peak_mem_gb']:.1f} GB")
    if job.outputs.get("best_checkpoint"):
        parts.append(f"best checkpoint: {job.outputs['best_checkpoint']}")
    if job.outputs.get("lora_name"):
        parts.append(f"saved as LoRA **{job.outputs['lora_name']}**")
    return " · ".join(parts)


def render(ctx: UIContext, timer: gr.Timer):
    studio = ctx.studio
    gr.Markdown(wording.TRAINING_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            dataset = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=False)
            name = gr.Textbox(label="LoRA name", placeholder="mila-v1")
            trigger = gr.Textbox(label="Trigger word (blank = the dataset's)")
            default = studio.training.default_preset
            preset = gr.Radio(list(studio.training.presets()), value=default, label="Preset")
            preset_info = gr.Markdown(studio.training.preset_fields(default)["description"])
            first = preset_values(studio, default)
            with gr.Row():
                steps = gr.Number(first[0], label="Steps", precision=0)
                rank = gr.Number(first[1], label="Rank", precision=0)
            with gr.Row():
                lr = gr.Number(first[2], label="Learning rate")
                resolution = gr.Number(first[3], label="Resolution (px)", precision=0)
            memory = gr.Dropdown(MEMORY_MODES, value="auto", label="Memory mode")
            with gr.Row():
                start = gr.Button("Start training", variant="primary")
                cancel = gr.Button("Cancel", variant="stop")
                resume = gr.Button("Resume")
        with gr.Column(scale=3):
            job_pick = gr.Dropdown(label="Training job", choices=[], allow_custom_value=False)
            progress = gr.HTML(progress_html(None))
            stats = gr.Markdown(wording.NOTHING_RUNNING)
            loss = gr.LinePlot(loss_frame(None), x="step", y="value", color="series", label="Loss",
                               height=220)
            identity = gr.LinePlot(identity_frame(None), x="step", y="distance", visible=False,
                                   label="Sample face distance to reference (lower is better)", height=180)
            samples = gr.Gallery(label="Samples", columns=4, height=200)
            logs = gr.Textbox(label="Log", lines=6, max_lines=12, autoscroll=True)

    def jobs_for(character_id):
        return [j for j in studio.jobs.list("train")
                if not character_id or j.params.get("dataset_id") in _dataset_ids(character_id)]

    def _dataset_ids(character_id):
        return {d["id"] for d in studio.store.find("datasets", character_id=character_id)}

    def pickers(character_id):
        datasets = studio.store.find("datasets", character_id=character_id) if character_id else []
        ds_choices = [(f"{d['count']} images · {d['trigger']} · {d['id']}", d["id"]) for d in datasets]
        jobs = job_choices(jobs_for(character_id))
        return (gr.update(choices=ds_choices, value=ds_choices[-1][1] if ds_choices else None),
                gr.update(choices=jobs, value=jobs[-1][1] if jobs else None))

    def show(job_id):
        job = studio.jobs.get(job_id, with_metrics=True) if job_id else None
        sample_paths = shown(studio, job.outputs.get("samples", [])) if job else []
        has_identity = bool(job and job.metrics.get("identity"))
        return (progress_html(job), stats_text(job), loss_frame(job),
                gr.update(value=identity_frame(job), visible=has_identity), sample_paths, job_logs(job))

    @friendly
    def begin(dataset_id, lora_name, trigger_word, preset_name, n_steps, n_rank, rate, res, mode):
        job = studio.training.start(dataset_id, TrainOptions(
            name=lora_name, trigger=trigger_word, preset=preset_name, steps=_number(n_steps),
            rank=_number(n_rank), learning_rate=_number(rate), resolution=_number(res), memory_mode=mode))
        return (gr.update(choices=job_choices(studio.jobs.list("train")), value=job.id), *show(job.id))

    @friendly
    def stop(job_id):
        if job_id:
            studio.jobs.cancel(job_id)
        return show(job_id)

    @friendly
    def again(job_id):
        if job_id:
            studio.jobs.resume(job_id)
        return show(job_id)

    live = [progress, stats, loss, identity, samples, logs]
    preset.change(lambda p: (studio.training.preset_fields(p)["description"], *preset_values(studio, p)), [preset],
                  [preset_info, steps, rank, lr, resolution], api_visibility="private")
    start.click(begin, [dataset, name, trigger, preset, steps, rank, lr, resolution, memory],
                [job_pick, *live], api_visibility="private")
    cancel.click(stop, [job_pick], live, api_visibility="private")
    resume.click(again, [job_pick], live, api_visibility="private")
    job_pick.change(show, [job_pick], live, api_visibility="private")
    timer.tick(show, [job_pick], live, api_visibility="private", show_progress="hidden")
    ctx.character.change(pickers, [ctx.character], [dataset, job_pick], api_visibility="private")
    return pickers, [ctx.character], [dataset, job_pick]
