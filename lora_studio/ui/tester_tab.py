"""Tab 5 · Strength tester: a labelled strength × seed grid, measured, with a recommendation."""
from __future__ import annotations

import functools

import pandas as pd
import gradio as gr

from ..services.costs import parse_cap
from ..services.strength_analysis import parse_strengths
from ..services.tester import SweepRequest
from ..services import limits
from . import wording
from .common import UIContext, estimate_text, friendly, lora_choices, parse_weights, progress_html
from .files import shown


def measures_frame(analysis: dict | None) -> pd.DataFrame:
    rows = []
    for row in (analysis or {}).get("rows", []):
        for key in ("identity", "diversity", "change"):
            if row.get(key) is not None:
                rows.append({"strength": row["strength"], "value": row[key], "measure": key})
    return pd.DataFrame(rows or [{"strength": 0.0, "value": 0.0, "measure": "diversity"}])


def verdict_text(analysis: dict | None) -> str:
    if not analysis:
        return ""
    head = f"**Recommended strength: {analysis['recommended']:g}**" if analysis.get("recommended") is not None \
        else "**No strength recommended**"
    return f"{head} — {analysis['reason']}"


def prompt_for(studio, lora_id):
    """A starting prompt with the LoRA's trigger word."""
    if not lora_id:
        return gr.update()
    trigger = studio.library.get(lora_id).get("trigger") or "the character"
    return f"photo of {trigger} in a café, natural light"


def seeds_of(seed_text) -> list[int]:
    return limits.parse_seeds(seed_text or "")


def sweep_estimate(studio, strength_text, seed_text, extra_text) -> str:
    """The expected Replicate cost of the sweep the form describes ("" off Replicate or while half-typed)."""
    if not studio.costs.paid:
        return ""
    try:
        n_strengths, n_seeds = len(parse_strengths(strength_text)), len(seeds_of(seed_text)[:6])
        with_extra = bool(parse_weights(extra_text))
    except Exception:  # noqa: BLE001 - half-typed values: the estimate waits, the start explains
        return ""
    return estimate_text(studio.tester.estimate(n_strengths, n_seeds, True, with_extra))


def render(ctx: UIContext, timer: gr.Timer):
    studio = ctx.studio
    gr.Markdown(wording.TESTER_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            lora = gr.Dropdown(label="LoRA to sweep", choices=lora_choices(studio))
            prompt = gr.Textbox(label="Prompt", value="photo of the character in a café, natural light")
            strengths = gr.Textbox(label="Strengths", value="0, 0.6, 0.8, 1.0, 1.2")
            seeds = gr.Textbox(label="Seeds", value="1, 2, 3")
            extra = gr.Textbox(label="Other LoRAs at a fixed weight (name:weight, …)", placeholder="film-style:0.6")
            cap = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
            estimate = gr.Markdown(sweep_estimate(studio, strengths.value, seeds.value, extra.value),
                                   visible=ctx.paid, elem_classes=["ls-estimate"])
            if ctx.paid:
                gr.Markdown(wording.GO_FAST_OFF_NOTE)
            run = gr.Button("Run strength test", variant="primary")
        with gr.Column(scale=3):
            progress = gr.HTML(progress_html(None))
            verdict = gr.Markdown()
            grid = gr.Image(label="Strength × seed grid", type="filepath", interactive=False)
            plot = gr.LinePlot(measures_frame(None), x="strength", y="value", color="measure", visible=False,
                               label="Identity (face distance), diversity between seeds, change vs. no LoRA",
                               height=220)

    def latest_sweep(lora_id):
        jobs = [j for j in studio.jobs.list("sweep") if j.params.get("lora_id") == lora_id]
        return jobs[-1] if jobs else None

    def show(lora_id):
        job = latest_sweep(lora_id) if lora_id else None
        if job is None:
            return progress_html(None), "", None, gr.update(visible=False)
        analysis = job.outputs.get("analysis")
        return (progress_html(job), verdict_text(analysis), shown(studio, job.outputs.get("grid")),
                gr.update(value=measures_frame(analysis), visible=bool(analysis)))

    @friendly
    def start(lora_id, text, strength_text, seed_text, extra_text, cap_usd):
        values = parse_strengths(strength_text)
        job = studio.tester.start(SweepRequest(
            lora=lora_id or "", prompt=text, strengths=tuple(values), seeds=tuple(seeds_of(seed_text)),
            extra=tuple(parse_weights(extra_text).items()), max_usd=parse_cap(cap_usd)))
        return show(job.params["lora_id"])

    def refresh_choices(current):
        choices = lora_choices(studio)
        ids = [c[1] for c in choices]
        return gr.update(choices=choices, value=current if current in ids else (ids[-1] if ids else None))

    outputs = [progress, verdict, grid, plot]
    run.click(start, [lora, prompt, strengths, seeds, extra, cap], outputs, api_visibility="private")
    # Only a LoRA picked by hand rewrites the prompt, so a restored page keeps the remembered one.
    lora.input(functools.partial(prompt_for, studio), [lora], [prompt], api_visibility="private")
    lora.change(show, [lora], outputs, api_visibility="private")
    timer.tick(show, [lora], outputs, api_visibility="private", show_progress="hidden")
    if ctx.paid:
        for box in (strengths, seeds, extra):
            box.change(functools.partial(sweep_estimate, studio), [strengths, seeds, extra], [estimate],
                       api_visibility="private", show_progress="hidden")
    ctx.share("tester.lora", lora)
    ctx.share("tester.prompt", prompt)
    for key, component in (("lora", lora), ("prompt", prompt), ("strengths", strengths), ("seeds", seeds),
                           ("extra", extra), ("max_usd", cap)):
        if key != "max_usd" or ctx.paid:
            ctx.remember(f"tester.{key}", component, choices=(lambda: lora_choices(studio)) if key == "lora" else None)
    return refresh_choices, [lora], [lora]
