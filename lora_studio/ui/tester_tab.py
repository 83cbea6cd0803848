"""Tab 5 · Strength tester: a labelled strength × seed grid, measured, with a recommendation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import gradio as gr

from ..services.costs import parse_cap
from ..services.strength_analysis import parse_strengths
from ..services.tester import SweepRequest
from ..services import limits
from ..studio import Studio
from . import wording
from .common import UIContext, estimate_text, lora_choices, parse_weights, progress_html
from .events import KEEP, OnOpen, Reply
from .files import shown


class TesterParts:
    """The tab's components, by the names its replies use."""

    lora: gr.Dropdown
    prompt: gr.Textbox
    strengths: gr.Textbox
    seeds: gr.Textbox
    extra: gr.Textbox
    both: gr.Checkbox
    max_usd: gr.Number
    estimate: gr.Markdown
    run: gr.Button
    progress: gr.HTML
    verdict: gr.Markdown
    grid: gr.Image
    plot: gr.LinePlot


@dataclass
class SweepView(Reply):
    """The latest sweep of the picked LoRA: progress, verdict, grid and the measures by strength."""

    progress: str = KEEP
    verdict: str = KEEP
    grid: str | None = KEEP
    plot: Any = KEEP


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


def prompt_for(studio: Studio, lora_id):
    """A starting prompt with the LoRA's trigger word."""
    if not lora_id:
        return gr.update()
    trigger = studio.library.get(lora_id).get("trigger") or "the character"
    return f"photo of {trigger} in a café, natural light"


def seeds_of(seed_text) -> list[int]:
    return limits.parse_seeds(seed_text or "")


def sweep_estimate(studio: Studio, strength_text, seed_text, extra_text) -> str:
    """The expected Replicate cost of the sweep the form describes ("" off Replicate or while half-typed)."""
    if not studio.costs.paid:
        return ""
    try:
        n_strengths, n_seeds = len(parse_strengths(strength_text)), len(seeds_of(seed_text)[:6])
        with_extra = bool(parse_weights(extra_text))
    except Exception:  # noqa: BLE001 - half-typed values: the estimate waits, the start explains
        return ""
    return estimate_text(studio.tester.estimate(n_strengths, n_seeds, True, with_extra))


def latest_sweep(studio: Studio, lora_id):
    jobs = [j for j in studio.jobs.list("sweep") if j.params.get("lora_id") == lora_id]
    return jobs[-1] if jobs else None


def show(studio: Studio, lora_id) -> SweepView:
    job = latest_sweep(studio, lora_id) if lora_id else None
    if job is None:
        return SweepView(progress=progress_html(None), verdict="", grid=None, plot=gr.update(visible=False))
    analysis = job.outputs.get("analysis")
    verdict = verdict_text(analysis)
    if job.outputs.get("comparison"):  # a Klein sweep on both checkpoints
        verdict += f"\n\n{job.outputs['comparison']}"
    return SweepView(progress=progress_html(job), verdict=verdict,
                     grid=shown(studio, job.outputs.get("grid")),
                     plot=gr.update(value=measures_frame(analysis), visible=bool(analysis)))


def start(studio: Studio, lora_id, text, strength_text, seed_text, extra_text, cap_usd, both=False) -> SweepView:
    values = parse_strengths(strength_text)
    job = studio.tester.start(SweepRequest(
        lora=lora_id or "", prompt=text, strengths=tuple(values), seeds=tuple(seeds_of(seed_text)),
        extra=tuple(parse_weights(extra_text).items()), max_usd=parse_cap(cap_usd),
        checkpoints=studio.tester.both_checkpoints() if both else ()))
    return show(studio, job.params["lora_id"])


def refresh_choices(studio: Studio, current):
    choices = lora_choices(studio)
    ids = [c[1] for c in choices]
    return gr.update(choices=choices, value=current if current in ids else (ids[-1] if ids else None))


def render(ctx: UIContext) -> TesterParts:
    studio = ctx.studio
    p = TesterParts()
    gr.Markdown(wording.TESTER_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            p.lora = gr.Dropdown(label="LoRA to sweep", choices=lora_choices(studio))
            p.prompt = gr.Textbox(label="Prompt", value="photo of the character in a café, natural light")
            p.strengths = gr.Textbox(label="Strengths", value="0, 0.6, 0.8, 1.0, 1.2")
            p.seeds = gr.Textbox(label="Seeds", value="1, 2, 3")
            p.extra = gr.Textbox(label="Other LoRAs at a fixed weight (name:weight, …)", placeholder="film-style:0.6")
            p.both = gr.Checkbox(False, label=wording.BOTH_CHECKPOINTS_LABEL, info=wording.BOTH_CHECKPOINTS_INFO,
                                 elem_id="tester-both")
            p.max_usd = gr.Number(0, label=wording.CAP_LABEL, info=wording.CAP_INFO, minimum=0, visible=ctx.paid)
            p.estimate = gr.Markdown(sweep_estimate(studio, p.strengths.value, p.seeds.value, p.extra.value),
                                     visible=ctx.paid, elem_classes=["ls-estimate"])
            if ctx.paid:
                gr.Markdown(wording.GO_FAST_OFF_NOTE)
            p.run = gr.Button("Run strength test", variant="primary")
        with gr.Column(scale=3):
            p.progress = gr.HTML(progress_html(None))
            p.verdict = gr.Markdown()
            p.grid = gr.Image(label="Strength × seed grid", type="filepath", interactive=False)
            p.plot = gr.LinePlot(measures_frame(None), x="strength", y="value", color="measure", visible=False,
                                 label="Identity (face distance), diversity between seeds, change vs. no LoRA",
                                 height=220)
    return p


def listen(ctx: UIContext, p: TesterParts, timer: gr.Timer) -> OnOpen:
    shown_sweep = SweepView.to(p)
    ctx.on(p.run.click, start, [p.lora, p.prompt, p.strengths, p.seeds, p.extra, p.max_usd, p.both], shown_sweep)
    # Only a LoRA picked by hand rewrites the prompt, so a restored page keeps the remembered one.
    ctx.on(p.lora.input, prompt_for, [p.lora], [p.prompt])
    ctx.on(p.lora.change, show, [p.lora], shown_sweep)
    ctx.on(timer.tick, show, [p.lora], shown_sweep, show_progress="hidden")
    if ctx.paid:
        for box in (p.strengths, p.seeds, p.extra):
            ctx.on(box.change, sweep_estimate, [p.strengths, p.seeds, p.extra], [p.estimate], show_progress="hidden")
    ctx.share("tester.lora", p.lora)
    ctx.share("tester.prompt", p.prompt)
    for key in ("lora", "prompt", "strengths", "seeds", "extra", "max_usd"):
        if key != "max_usd" or ctx.paid:
            choices = (lambda: lora_choices(ctx.studio)) if key == "lora" else None
            ctx.remember(f"tester.{key}", getattr(p, key), choices=choices)
    return OnOpen(refresh_choices, [p.lora], [p.lora])
