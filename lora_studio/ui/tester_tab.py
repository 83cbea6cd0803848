"""Tab 5 · Strength tester: a labelled strength × seed grid, measured, with a recommendation."""
from __future__ import annotations

import pandas as pd
import gradio as gr

from ..services.strength_analysis import parse_strengths
from ..services.tester import SweepRequest
from . import wording
from .common import UIContext, friendly, parse_weights, progress_html


def lora_choices(studio) -> list[tuple[str, str]]:
    return [(r["name"], r["id"]) for r in studio.library.list()]


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
            run = gr.Button("Run strength test", variant="primary")
        with gr.Column(scale=3):
            progress = gr.HTML(progress_html(None))
            verdict = gr.Markdown()
            grid = gr.Image(label="Strength × seed grid", type="filepath", interactive=False)
            plot = gr.LinePlot(measures_frame(None), x="strength", y="value", color="measure",
                               label="Identity (face distance), diversity between seeds, change vs. no LoRA",
                               height=220)
    job_id = gr.State(None)

    def show(current):
        job = studio.jobs.get(current) if current else None
        if job is None:
            return progress_html(None), "", None, measures_frame(None)
        analysis = job.outputs.get("analysis")
        return progress_html(job), verdict_text(analysis), job.outputs.get("grid"), measures_frame(analysis)

    @friendly
    def start(lora_id, text, strength_text, seed_text, extra_text):
        values = parse_strengths(strength_text)
        seed_values = [int(s) for s in seed_text.replace(";", ",").split(",") if s.strip()]
        job = studio.tester.start(SweepRequest(
            lora=lora_id or "", prompt=text, strengths=tuple(values), seeds=tuple(seed_values),
            extra=tuple(parse_weights(extra_text).items())))
        return job.id, *show(job.id)

    def refresh_choices():
        return gr.update(choices=lora_choices(studio))

    outputs = [progress, verdict, grid, plot]
    run.click(start, [lora, prompt, strengths, seeds, extra], [job_id, *outputs], api_visibility="private")
    timer.tick(show, [job_id], outputs, api_visibility="private", show_progress="hidden")
    return refresh_choices, [], [lora]
