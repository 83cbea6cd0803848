"""Tab 4 · Training: presets, live logs, loss curve, ETA and samples; the job outlives the page."""
from __future__ import annotations

import pandas as pd
import gradio as gr

from ..jobs import JobView
from ..services import UserError
from ..services.costs import parse_cap
from ..services.preset_store import PresetFields
from ..services.text import same_name
from ..services.training_jobs import TrainOptions
from . import wording
from .tester_tab import prompt_for
from .common import (UIContext, beside, estimate_text, fresh_choices, job_choices, job_logs, lora_choices,
                     or_preset, progress_html)
from .files import shown
from .owner import NOT_OWNER, is_owner, requester

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


def preset_values(studio, name: str, own=None) -> tuple:
    """The preset's form values (steps, rank, lr, resolution, memory mode, cap, alpha), so each can be edited."""
    fields = studio.training.saved_presets.get(name, own).form()
    return tuple(fields[k] for k in PRESET_FIELDS)


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


def render(ctx: UIContext, timer: gr.Timer):
    studio = ctx.studio
    gr.Markdown(wording.TRAINING_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            dataset = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=False)
            name = gr.Textbox(label="LoRA name", placeholder="mila-v1")
            trigger = gr.Textbox(label="Trigger word (blank = the dataset's)")
            default = studio.training.default_preset
            preset = gr.Radio(studio.training.presets(), value=default, label="Preset", elem_id="training-preset")
            preset_info = gr.Markdown(studio.training.preset_fields(default)["description"])
            first = preset_values(studio, default)
            with gr.Row():
                steps = gr.Number(first[0], label="Steps", precision=0, elem_id="training-steps")
                rank = gr.Number(first[1], label="Rank", precision=0)
                alpha = gr.Number(first[6], label=wording.ALPHA_LABEL, info=wording.ALPHA_INFO, minimum=0)
            with gr.Row():
                lr = gr.Number(first[2], label="Learning rate")
                resolution = gr.Number(first[3], label="Resolution (px)", precision=0)
            memory = gr.Dropdown(studio.training.memory_modes(), value="auto", label="Memory mode")
            memory_plan = gr.Markdown()
            places = studio.training.placements()
            train_on = gr.Dropdown(places, value=studio.training.default_placement, label=wording.TRAIN_ON_LABEL,
                                   visible=len(places) > 1, elem_id="training-where")
            train_on_note = gr.Markdown(studio.training.placement_note(None), visible=len(places) > 1)
            cap = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
            with gr.Accordion("Save these settings as a preset", open=False):
                gr.Markdown(wording.PRESET_HELP)
                with gr.Row():
                    preset_name = gr.Textbox(label="Preset name", placeholder="My character 1500", scale=2,
                                             elem_id="preset-name")
                    save_preset = gr.Button("Save preset", scale=1)
                    delete_preset = gr.Button("Delete preset", variant="stop", scale=1)
                preset_message = gr.Markdown()
            estimate = gr.Markdown(estimate_text(studio.training.estimate(first[0])) if ctx.paid else "",
                                   visible=ctx.paid, elem_classes=["ls-estimate"])
            with gr.Row():
                start = gr.Button("Start training", variant="primary")
                cancel = gr.Button("Cancel", variant="stop")
                resume = gr.Button("Resume")
        with gr.Column(scale=3):
            job_pick = gr.Dropdown(label="Training job", choices=[], allow_custom_value=False)
            progress = gr.HTML(progress_html(None))
            done = gr.Markdown(wording.TRAINING_DONE, visible=False)
            next_step = gr.Button(wording.NEXT_TESTER, variant="primary", visible=False)
            message = gr.HTML()
            stats = gr.Markdown()
            loss = gr.LinePlot(loss_frame(None), x="step", y="value", color="series", label="Loss",
                               height=220)
            identity = gr.LinePlot(identity_frame(None), x="step", y="distance", visible=False,
                                   label="Sample face distance to reference (lower is better)", height=180)
            samples = gr.Gallery(label="Samples", columns=4, height=200)
            logs = gr.Textbox(label="Log", lines=6, max_lines=12, autoscroll=True)
    shown_jobs = gr.State(None)
    own_presets = ctx.shared["own_presets"]  # a visitor's own presets, in their browser (made in app.py)

    def jobs_for(character_id, request):
        """The trainings this visitor may see (the owner's are the owner's: lora_studio/job_access.py)."""
        return [j for j in studio.jobs.list("train", seen_by=requester(studio, request))
                if not character_id or j.params.get("dataset_id") in _dataset_ids(character_id)]

    def _dataset_ids(character_id):
        return {d["id"] for d in studio.store.find("datasets", character_id=character_id)}

    def pickers(character_id, request: gr.Request):
        datasets = studio.store.find("datasets", character_id=character_id) if character_id else []
        ds_choices = [(f"{d['count']} images · {d['trigger']} · {d['id']}", d["id"]) for d in datasets]
        jobs = job_choices(jobs_for(character_id, request))
        return (gr.update(choices=ds_choices, value=ds_choices[-1][1] if ds_choices else None),
                gr.update(choices=jobs, value=jobs[-1][1] if jobs else None))

    @beside(9, 8)
    def show(job_id, request: gr.Request):
        job = studio.jobs.get(job_id, with_metrics=True, seen_by=requester(studio, request)) if job_id else None
        sample_paths = shown(studio, job.outputs.get("samples", [])) if job else []
        has_identity = bool(job and job.metrics.get("identity"))
        finished = bool(job and job.status == "succeeded" and job.outputs.get("lora_id"))
        return (progress_html(job), stats_text(job), loss_frame(job),
                gr.update(value=identity_frame(job), visible=has_identity), sample_paths, job_logs(job),
                gr.update(visible=finished), gr.update(visible=finished), gr.skip())

    live_count = 9  # progress, stats, loss, identity, samples, logs, done, next_step, message

    @beside(live_count + 1, live_count)
    def begin(dataset_id, lora_name, trigger_word, preset_name_, n_steps, n_rank, rate, res, mode, cap_usd,
              n_alpha, where, request: gr.Request):
        job = studio.training.start(dataset_id, form_options(
            n_steps, n_rank, rate, res, mode, cap_usd, n_alpha, name=lora_name, trigger=trigger_word,
            preset=shared_preset(studio, preset_name_), train_on=where))
        listed = job_choices(studio.jobs.list("train", seen_by=requester(studio, request)))
        return (gr.update(choices=listed, value=job.id), *show(job.id, request)[:-1], "")

    @beside(live_count, live_count - 1)
    def stop(job_id, request: gr.Request):
        if job_id:
            studio.jobs.cancel(job_id, seen_by=requester(studio, request))
        return (*show(job_id, request)[:-1], "")

    @beside(live_count, live_count - 1)
    def again(job_id, request: gr.Request):
        if job_id:
            studio.jobs.resume(job_id, seen_by=requester(studio, request))
        return (*show(job_id, request)[:-1], "")

    @beside(2 + live_count, 1 + live_count)
    def tick(character_id, job_id, shown, request: gr.Request):
        update, shown = fresh_choices(job_choices(jobs_for(character_id, request)), job_id, shown)
        return (update, shown, *show(job_id, request))

    @beside(2 + len(PRESET_FIELDS), 1 + len(PRESET_FIELDS))
    def apply_preset(name_, own):
        fields = studio.training.saved_presets.get(name_, own)
        return (fields.description, *preset_values(studio, name_, own), "")

    @beside(4, 2)
    def keep_preset(name_, n_steps, n_rank, rate, res, mode, cap_usd, n_alpha, own, request: gr.Request):
        """The owner saves for everyone (the workspace); on a shared link a visitor saves in their browser."""
        options = form_options(n_steps, n_rank, rate, res, mode, cap_usd, n_alpha)
        own_update = gr.skip()
        if is_owner(studio, request):
            saved = studio.training.save_preset(name_, options)
        else:
            own, saved = studio.training.saved_presets.save_own(own, name_, PresetFields.of(options))
            own_update = own
        info = studio.training.saved_presets.get(saved, own).description
        return (gr.update(choices=studio.training.saved_presets.names(own), value=saved), info,
                f"Saved preset **{saved}**.", own_update)

    @beside(4 + len(PRESET_FIELDS), 2 + len(PRESET_FIELDS))
    def drop_preset(current, typed, own, request: gr.Request):
        target = (typed or "").strip() or current
        presets = studio.training.saved_presets
        own_update = gr.skip()
        shared = studio.training.presets()
        if not same_name(target, shared) and same_name(target, presets.own(own)):
            own = own_update = presets.delete_own(own, target)
        elif presets.is_builtin(target) or is_owner(studio, request):
            studio.training.delete_preset(target)  # a built-in is refused there, in its own words
        else:
            raise UserError(NOT_OWNER)
        fields = presets.get(default, own)
        return (gr.update(choices=presets.names(own), value=default), fields.description,
                *preset_values(studio, default, own), f"Deleted preset **{target}**.", own_update)

    def expected(n_steps):
        return estimate_text(studio.training.estimate(n_steps)) if ctx.paid else ""

    def next_tab(job_id):
        """To the tester, with the LoRA this job trained picked and a prompt using its trigger word."""
        job = studio.jobs.get(job_id) if job_id else None
        lora_id = job.outputs.get("lora_id") if job else None
        if not lora_id or not studio.store.get("loras", lora_id):
            return gr.Tabs(selected="tester"), gr.skip(), gr.skip()
        return (gr.Tabs(selected="tester"), gr.update(choices=lora_choices(studio), value=lora_id),
                prompt_for(studio, lora_id))

    form = [steps, rank, lr, resolution, memory, cap, alpha]
    live = [progress, stats, loss, identity, samples, logs, done, next_step, message]
    preset.input(apply_preset, [preset, own_presets], [preset_info, *form, preset_message], api_visibility="private")
    save_preset.click(keep_preset, [preset_name, *form, own_presets],
                      [preset, preset_info, preset_message, own_presets],
                      api_visibility="private")
    delete_preset.click(drop_preset, [preset, preset_name, own_presets],
                        [preset, preset_info, *form, preset_message, own_presets], api_visibility="private")
    start.click(begin, [dataset, name, trigger, preset, *form, train_on], [job_pick, *live], api_visibility="private")
    train_on.change(studio.training.placement_note, [train_on], [train_on_note], api_visibility="private",
                    show_progress="hidden")
    gr.on(None, studio.training.memory_plan, [resolution, memory, rank], [memory_plan],  # on load and on change
          api_visibility="private", show_progress="hidden")
    cancel.click(stop, [job_pick], live, api_visibility="private")
    resume.click(again, [job_pick], live, api_visibility="private")
    job_pick.change(show, [job_pick], live, api_visibility="private")
    timer.tick(tick, [ctx.character, job_pick, shown_jobs], [job_pick, shown_jobs, *live], api_visibility="private",
               show_progress="hidden")
    ctx.character.change(pickers, [ctx.character], [dataset, job_pick], api_visibility="private")
    if ctx.paid:
        steps.change(expected, [steps], [estimate], api_visibility="private", show_progress="hidden")
    ctx.later(lambda: next_step.click(next_tab, [job_pick], [ctx.tabs, ctx.shared["tester.lora"],
                                                             ctx.shared["tester.prompt"]], api_visibility="private"))
    ctx.remember("training.preset", preset, choices=studio.training.presets)
    for key, component in zip(PRESET_FIELDS, form):
        if key != "max_usd" or ctx.paid:
            ctx.remember(f"training.{key}", component)
    return pickers, [ctx.character], [dataset, job_pick]
