"""Tab 4 · Training: presets, live logs, loss curve, ETA and samples; the job outlives the page."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import gradio as gr

from ..jobs import JobView
from ..services.costs import parse_cap
from ..services.preset_store import PresetFields
from ..services.text import same_name
from ..services.training_jobs import TrainOptions
from ..studio import Studio
from . import wording
from .tester_tab import prompt_for
from .common import (UIContext, estimate_text, fresh_choices, job_choices, job_logs, lora_choices, or_preset,
                     progress_html)
from .events import KEEP, OnOpen, Reply
from .files import shown
from .owner import is_owner, require_owner, requester


def loss_frame(job: JobView | None) -> pd.DataFrame:
    rows = []
    if job:
        for name in ("loss", "loss_smooth"):
            rows += [{"step": s, "value": v, "series": name} for s, v in job.metrics.get(name, []) if s is not None]
    if not rows:  # no job: an empty plot, not a made-up point at 0 (its axes read "0.000000")
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "series": pd.Series(dtype="object")})
    return pd.DataFrame(rows)


def identity_frame(job: JobView | None) -> pd.DataFrame:
    rows = [{"step": s, "distance": v} for s, v in (job.metrics.get("identity", []) if job else []) if s is not None]
    return pd.DataFrame(rows or [{"step": 0, "distance": None}])


PRESET_FIELDS = ("steps", "rank", "learning_rate", "resolution", "memory_mode", "max_usd", "alpha")


def preset_values(studio, name: str, own=None) -> dict:
    """The preset's form values by field (steps, rank, lr, resolution, memory mode, cap, alpha), each editable."""
    fields = studio.training.saved_presets.get(name, own).form()
    return {k: fields[k] for k in PRESET_FIELDS}


def shared_preset(studio, name: str) -> str:
    """The preset a training starts from: a visitor's own one lives in their browser, so the server
    starts from the default and the form (which holds all of that preset's values) overrides it."""
    return name if name in studio.training.presets() else studio.training.default_preset


def form_options(n_steps, n_rank, rate, res, mode, cap, n_alpha=None, **named) -> TrainOptions:
    return TrainOptions(name=named.get("name", ""), trigger=named.get("trigger", ""),
                        preset=named.get("preset") or "Standard", steps=or_preset(n_steps), rank=or_preset(n_rank),
                        learning_rate=or_preset(rate), resolution=or_preset(res), memory_mode=mode or "auto",
                        max_usd=parse_cap(cap) or 0.0, alpha=or_preset(n_alpha),
                        train_on=named.get("train_on") or None)


def stats_text(job: JobView | None) -> str:
    if not job:
        return ""  # the progress box above already says there is no job
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


class TrainingParts:
    """The tab's components, by the names its replies use (the form's, by their preset field)."""

    character: gr.Dropdown
    tabs: gr.Tabs
    dataset: gr.Dropdown
    name: gr.Textbox
    trigger: gr.Textbox
    preset: gr.Radio
    preset_info: gr.Markdown
    steps: gr.Number
    rank: gr.Number
    alpha: gr.Number
    learning_rate: gr.Number
    resolution: gr.Number
    memory_mode: gr.Dropdown
    memory_plan: gr.Markdown
    train_on: gr.Dropdown
    train_on_note: gr.Markdown
    max_usd: gr.Number
    preset_name: gr.Textbox
    save_preset: gr.Button
    delete_preset: gr.Button
    preset_message: gr.Markdown
    estimate: gr.Markdown
    start: gr.Button
    cancel: gr.Button
    resume: gr.Button
    job_pick: gr.Dropdown
    progress: gr.HTML
    done: gr.Markdown
    next_step: gr.Button
    message: gr.HTML
    stats: gr.Markdown
    loss: gr.LinePlot
    identity: gr.LinePlot
    samples: gr.Gallery
    logs: gr.Textbox
    shown_jobs: gr.State
    own_presets: gr.BrowserState


@dataclass
class JobPanel(Reply):
    """The pickers and everything the picked job shows; errors show in `message`."""

    MESSAGE = "message"
    dataset: Any = KEEP
    job_pick: Any = KEEP
    shown_jobs: str | None = KEEP
    progress: str = KEEP
    stats: str = KEEP
    loss: pd.DataFrame = KEEP
    identity: Any = KEEP
    samples: list = KEEP
    logs: str = KEEP
    done: Any = KEEP
    next_step: Any = KEEP
    message: str = KEEP


LIVE = ("progress", "stats", "loss", "identity", "samples", "logs", "done", "next_step", "message")


@dataclass
class PresetForm(Reply):
    """The preset picker, its description and the form's values; errors show in `preset_message`."""

    MESSAGE = "preset_message"
    preset: Any = KEEP
    preset_info: str = KEEP
    steps: Any = KEEP
    rank: Any = KEEP
    learning_rate: Any = KEEP
    resolution: Any = KEEP
    memory_mode: Any = KEEP
    max_usd: Any = KEEP
    alpha: Any = KEEP
    preset_message: str = KEEP
    own_presets: Any = KEEP


@dataclass
class NextTab(Reply):
    tabs: Any = KEEP
    lora: Any = KEEP
    prompt: Any = KEEP


def jobs_for(studio: Studio, character_id, request: gr.Request | None = None) -> list[JobView]:
    """The trainings the asker may see (the owner's are the owner's: lora_studio/job_access.py)."""
    datasets = {d["id"] for d in studio.store.find("datasets", character_id=character_id)} if character_id else set()
    return [j for j in studio.jobs.list("train", seen_by=requester(studio, request))
            if not character_id or j.params.get("dataset_id") in datasets]


def pickers(studio: Studio, character_id, request: gr.Request = None) -> JobPanel:
    datasets = studio.store.find("datasets", character_id=character_id) if character_id else []
    ds_choices = [(f"{d['count']} images · {d['trigger']} · {d['id']}", d["id"]) for d in datasets]
    jobs = job_choices(jobs_for(studio, character_id, request))
    return JobPanel(dataset=gr.update(choices=ds_choices, value=ds_choices[-1][1] if ds_choices else None),
                    job_pick=gr.update(choices=jobs, value=jobs[-1][1] if jobs else None))


def show(studio: Studio, job_id, request: gr.Request = None) -> JobPanel:
    job = studio.jobs.get(job_id, with_metrics=True, seen_by=requester(studio, request)) if job_id else None
    finished = bool(job and job.status == "succeeded" and job.outputs.get("lora_id"))
    return JobPanel(progress=progress_html(job), stats=stats_text(job), loss=loss_frame(job),
                    identity=gr.update(value=identity_frame(job), visible=bool(job and job.metrics.get("identity"))),
                    samples=shown(studio, job.outputs.get("samples", [])) if job else [], logs=job_logs(job),
                    done=gr.update(visible=finished), next_step=gr.update(visible=finished))


def begin(studio: Studio, dataset_id, lora_name, trigger_word, preset_name_, n_steps, n_rank, rate, res, mode,
          cap_usd, n_alpha, where, request: gr.Request = None) -> JobPanel:
    job = studio.training.start(dataset_id, form_options(
        n_steps, n_rank, rate, res, mode, cap_usd, n_alpha, name=lora_name, trigger=trigger_word,
        preset=shared_preset(studio, preset_name_), train_on=where))
    listed = studio.jobs.list("train", seen_by=requester(studio, request))
    return replace(show(studio, job.id, request), job_pick=gr.update(choices=job_choices(listed), value=job.id),
                   message="")


def stop(studio: Studio, job_id, request: gr.Request = None) -> JobPanel:
    if job_id:
        studio.jobs.cancel(job_id, seen_by=requester(studio, request))
    return replace(show(studio, job_id, request), message="")


def again(studio: Studio, job_id, request: gr.Request = None) -> JobPanel:
    if job_id:
        studio.jobs.resume(job_id, seen_by=requester(studio, request))
    return replace(show(studio, job_id, request), message="")


def tick(studio: Studio, character_id, job_id, listed, request: gr.Request = None) -> JobPanel:
    update, listed = fresh_choices(job_choices(jobs_for(studio, character_id, request)), job_id, listed)
    return replace(show(studio, job_id, request), job_pick=update, shown_jobs=listed)


def apply_preset(studio: Studio, name_, own) -> PresetForm:
    fields = studio.training.saved_presets.get(name_, own)
    return PresetForm(preset_info=fields.description, **preset_values(studio, name_, own), preset_message="")


def keep_preset(studio: Studio, name_, n_steps, n_rank, rate, res, mode, cap_usd, n_alpha, own,
                request: gr.Request) -> PresetForm:
    """The owner saves for everyone (the workspace); on a shared link a visitor saves in their browser."""
    options = form_options(n_steps, n_rank, rate, res, mode, cap_usd, n_alpha)
    own_update = KEEP
    if is_owner(studio, request):
        saved = studio.training.save_preset(name_, options)
    else:
        own, saved = studio.training.saved_presets.save_own(own, name_, PresetFields.of(options))
        own_update = own
    return PresetForm(preset=gr.update(choices=studio.training.saved_presets.names(own), value=saved),
                      preset_info=studio.training.saved_presets.get(saved, own).description,
                      preset_message=f"Saved preset **{saved}**.", own_presets=own_update)


def drop_preset(studio: Studio, current, typed, own, request: gr.Request) -> PresetForm:
    """A visitor deletes their own preset; a shared one is the owner's (a built-in is refused in its own words)."""
    target = (typed or "").strip() or current
    presets = studio.training.saved_presets
    own_update = KEEP
    if not same_name(target, studio.training.presets()) and same_name(target, presets.own(own)):
        own = own_update = presets.delete_own(own, target)
    else:
        if not presets.is_builtin(target):
            require_owner(studio, request)
        studio.training.delete_preset(target)
    default = studio.training.default_preset
    return PresetForm(preset=gr.update(choices=presets.names(own), value=default),
                      preset_info=presets.get(default, own).description, **preset_values(studio, default, own),
                      preset_message=f"Deleted preset **{target}**.", own_presets=own_update)


def expected(studio: Studio, n_steps) -> str:
    return estimate_text(studio.training.estimate(n_steps)) if studio.costs.paid else ""


def placement_note(studio: Studio, where) -> str:
    return studio.training.placement_note(where)


def memory_plan(studio: Studio, resolution, mode, rank) -> str:
    return studio.training.memory_plan(resolution, mode, rank)


def next_tab(studio: Studio, job_id, request: gr.Request = None) -> NextTab:
    """To the tester, with the LoRA this job trained picked and a prompt using its trigger word."""
    job = studio.jobs.get(job_id, seen_by=requester(studio, request)) if job_id else None
    lora_id = job.outputs.get("lora_id") if job else None
    if not lora_id or not studio.store.get("loras", lora_id):
        return NextTab(tabs=gr.Tabs(selected="tester"))
    return NextTab(tabs=gr.Tabs(selected="tester"), lora=gr.update(choices=lora_choices(studio), value=lora_id),
                   prompt=prompt_for(studio, lora_id))


def render(ctx: UIContext) -> TrainingParts:
    studio = ctx.studio
    p = TrainingParts()
    p.character, p.tabs = ctx.character, ctx.tabs
    gr.Markdown(wording.TRAINING_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            p.dataset = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=False)
            p.name = gr.Textbox(label="LoRA name", placeholder="mila-v1")
            p.trigger = gr.Textbox(label="Trigger word (blank = the dataset's)")
            default = studio.training.default_preset
            p.preset = gr.Radio(studio.training.presets(), value=default, label="Preset", elem_id="training-preset")
            p.preset_info = gr.Markdown(studio.training.preset_fields(default)["description"])
            first = preset_values(studio, default)
            with gr.Row():
                p.steps = gr.Number(first["steps"], label="Steps", precision=0, elem_id="training-steps")
                p.rank = gr.Number(first["rank"], label="Rank", precision=0)
                p.alpha = gr.Number(first["alpha"], label=wording.ALPHA_LABEL, info=wording.ALPHA_INFO, minimum=0)
            with gr.Row():
                p.learning_rate = gr.Number(first["learning_rate"], label="Learning rate")
                p.resolution = gr.Number(first["resolution"], label="Resolution (px)", precision=0)
            p.memory_mode = gr.Dropdown(studio.training.memory_modes(), value="auto", label="Memory mode")
            p.memory_plan = gr.Markdown()
            places = studio.training.placements()
            p.train_on = gr.Dropdown(places, value=studio.training.default_placement, label=wording.TRAIN_ON_LABEL,
                                     visible=len(places) > 1, elem_id="training-where")
            p.train_on_note = gr.Markdown(studio.training.placement_note(None), visible=len(places) > 1)
            p.max_usd = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
            with gr.Accordion("Save these settings as a preset", open=False):
                gr.Markdown(wording.PRESET_HELP)
                with gr.Row():
                    p.preset_name = gr.Textbox(label="Preset name", placeholder="My character 1500", scale=2,
                                               elem_id="preset-name")
                    p.save_preset = gr.Button("Save preset", scale=1)
                    p.delete_preset = gr.Button("Delete preset", variant="stop", scale=1)
                p.preset_message = gr.Markdown()
            p.estimate = gr.Markdown(estimate_text(studio.training.estimate(first["steps"])) if ctx.paid else "",
                                     visible=ctx.paid, elem_classes=["ls-estimate"])
            with gr.Row():
                p.start = gr.Button("Start training", variant="primary")
                p.cancel = gr.Button("Cancel", variant="stop")
                p.resume = gr.Button("Resume")
        with gr.Column(scale=3):
            p.job_pick = gr.Dropdown(label="Training job", choices=[], allow_custom_value=False)
            p.progress = gr.HTML(progress_html(None))
            p.done = gr.Markdown(wording.TRAINING_DONE, visible=False)
            p.next_step = gr.Button(wording.NEXT_TESTER, variant="primary", visible=False)
            p.message = gr.HTML()
            p.stats = gr.Markdown()
            p.loss = gr.LinePlot(loss_frame(None), x="step", y="value", color="series", label="Loss", height=220)
            p.identity = gr.LinePlot(identity_frame(None), x="step", y="distance", visible=False,
                                     label="Sample face distance to reference (lower is better)", height=180)
            p.samples = gr.Gallery(label="Samples", columns=4, height=200)
            p.logs = gr.Textbox(label="Log", lines=6, max_lines=12, autoscroll=True)
    p.shown_jobs = gr.State(None)
    p.own_presets = ctx.shared["own_presets"]  # a visitor's own presets, in their browser (made in app.py)
    return p


def listen(ctx: UIContext, p: TrainingParts, timer: gr.Timer) -> OnOpen:
    form = [getattr(p, key) for key in PRESET_FIELDS]
    live = JobPanel.to(p, *LIVE)
    ctx.on(p.preset.input, apply_preset, [p.preset, p.own_presets],
           PresetForm.to(p, "preset_info", *PRESET_FIELDS, "preset_message"))
    ctx.on(p.save_preset.click, keep_preset, [p.preset_name, *form, p.own_presets],
           PresetForm.to(p, "preset", "preset_info", "preset_message", "own_presets"))
    ctx.on(p.delete_preset.click, drop_preset, [p.preset, p.preset_name, p.own_presets],
           PresetForm.to(p, "preset", "preset_info", *PRESET_FIELDS, "preset_message", "own_presets"))
    ctx.on(p.start.click, begin, [p.dataset, p.name, p.trigger, p.preset, *form, p.train_on],
           JobPanel.to(p, "job_pick", *LIVE))
    ctx.on(p.train_on.change, placement_note, [p.train_on], [p.train_on_note], show_progress="hidden")
    ctx.on(None, memory_plan, [p.resolution, p.memory_mode, p.rank], [p.memory_plan],  # on load and on change
           show_progress="hidden")
    ctx.on(p.cancel.click, stop, [p.job_pick], live)
    ctx.on(p.resume.click, again, [p.job_pick], live)
    ctx.on(p.job_pick.change, show, [p.job_pick], live)
    ctx.on(timer.tick, tick, [p.character, p.job_pick, p.shown_jobs], JobPanel.to(p, "job_pick", "shown_jobs", *LIVE),
           show_progress="hidden")
    ctx.on(p.character.change, pickers, [p.character], JobPanel.to(p, "dataset", "job_pick"))
    if ctx.paid:
        ctx.on(p.steps.change, expected, [p.steps], [p.estimate], show_progress="hidden")
    ctx.later(lambda: ctx.on(p.next_step.click, next_tab, [p.job_pick], NextTab.to(
        {"tabs": ctx.tabs, "lora": ctx.shared["tester.lora"], "prompt": ctx.shared["tester.prompt"]})))
    ctx.remember("training.preset", p.preset, choices=ctx.studio.training.presets)
    ctx.remember("training.train_on", p.train_on, choices=lambda: ctx.studio.training.placements())
    for key in PRESET_FIELDS:
        if key != "max_usd" or ctx.paid:
            ctx.remember(f"training.{key}", getattr(p, key))
    return OnOpen(pickers, [p.character], JobPanel.to(p, "dataset", "job_pick"))
