"""Library · the Hugging Face Hub: publish the picked LoRA to a repo, import a community LoRA by hub id.

Both are the owner's (ui/owner.py): they use the owner's Hugging Face token, and a publish writes
under the owner's name. Every handler here is `@owner_only`, so a visitor on a shared link or Space
is refused before anything reaches the Hub, whichever way the event is reached. Both run as jobs
beside the GPU queue (services/publish.py, services/hub_import.py); the page follows them with its
own timer, active only while one runs: bytes sent of the total, then the repo's link, or the
imported LoRA in the library above.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..jobs import JobView
from ..services import limits
from ..services.hub_import import KIND as IMPORT_KIND
from ..services.publish import KIND as PUBLISH_KIND
from ..studio import Studio
from . import wording
from .common import UIContext, progress_html
from .events import KEEP, Reply, expose
from .owner import owner_only


class ImportParts:
    """The import column's components (beside the file upload)."""

    hub_ref: gr.Textbox
    hub_import: gr.Button
    hub_progress: gr.HTML
    hub_job: gr.State
    hub_done: gr.State  # the imported LoRA's id: the library tab refreshes its list when it changes
    hub_poll: gr.Timer


class PublishParts:
    """The publish panel's components (under the picked LoRA)."""

    repo: gr.Textbox
    public: gr.Checkbox
    publish: gr.Button
    preview: gr.Button
    publish_progress: gr.HTML
    publish_link: gr.Markdown
    card: gr.Code
    publish_job: gr.State
    publish_poll: gr.Timer


@dataclass
class HubView(Reply):
    """Both panels' outputs; a failure shows as a popup (the panels' own texts stay)."""

    hub_progress: str = KEEP
    hub_job: str | None = KEEP
    hub_done: str | None = KEEP
    hub_poll: Any = KEEP
    publish_progress: str = KEEP
    publish_link: str = KEEP
    card: Any = KEEP
    publish_job: str | None = KEEP
    publish_poll: Any = KEEP


def job_of(studio: Studio, current, kind: str) -> JobView | None:
    if not current:
        return None
    job = studio.jobs.get(limits.record_id(current, "job id"))
    return job if job.kind == kind else None


def publish_text(studio: Studio, job: JobView) -> str:
    """The bar, and the bytes in words (a publish counts what the upload has read of each file)."""
    data = studio.publish.progress(job.id)
    return (progress_html(job) + f"<div class='ls-upload' data-bytes='{int(data['bytes_done'] or 0)}'>"
            f"{html.escape(data['sent'])}</div>")


def link_text(url) -> str:
    return f"**Published:** [{html.escape(str(url))}]({html.escape(str(url))})" if url else ""


# ---- the page's events (all the owner's) -----------------------------------------------------------
@owner_only
def hub_import_begin(studio: Studio, reference, name, trigger) -> HubView:
    job = studio.hub_imports.start(reference, name or "", trigger or "")
    return HubView(hub_job=job.id, hub_progress=progress_html(job), hub_poll=gr.Timer(active=True))


@owner_only
def hub_import_tick(studio: Studio, current) -> HubView:
    job = job_of(studio, current, IMPORT_KIND)
    if job is None:
        return HubView(hub_poll=gr.Timer(active=False))
    if not job.done:
        return HubView(hub_progress=progress_html(job))
    done = job.outputs.get("lora_id") if job.status == "succeeded" else KEEP
    return HubView(hub_progress=progress_html(job), hub_done=done, hub_poll=gr.Timer(active=False))


@owner_only
def publish_begin(studio: Studio, lora_id, repo_id, public) -> HubView:
    if not lora_id:
        raise gr.Error("Pick the LoRA to publish first.")
    job = studio.publish.start(lora_id, repo_id, public=bool(public))
    return HubView(publish_job=job.id, publish_progress=publish_text(studio, job), publish_link="",
                   publish_poll=gr.Timer(active=True))


@owner_only
def publish_tick(studio: Studio, current) -> HubView:
    job = job_of(studio, current, PUBLISH_KIND)
    if job is None:
        return HubView(publish_poll=gr.Timer(active=False))
    view = HubView(publish_progress=publish_text(studio, job))
    if job.done:
        view.publish_link, view.publish_poll = link_text(job.outputs.get("url")), gr.Timer(active=False)
    return view


@owner_only
def publish_preview(studio: Studio, lora_id, repo_id) -> HubView:
    if not lora_id:
        raise gr.Error("Pick the LoRA to publish first.")
    repo_id = limits.text(repo_id, "The repo", 200) or "your-name/lora"
    return HubView(card=gr.update(value=studio.publish.card(lora_id, repo_id), visible=True))


# ---- named endpoints (gradio_client), the owner's too ---------------------------------------------
@owner_only
def publish_lora(studio: Studio, lora: str, repo_id: str, public: bool = False) -> dict:
    job = studio.publish.start(lora, repo_id, public=public)
    return studio.publish.progress(job.id)


@owner_only
def publish_status(studio: Studio, job_id: str) -> dict:
    return studio.publish.progress(limits.record_id(job_id, "job id"))


@owner_only
def publish_card(studio: Studio, lora: str, repo_id: str) -> str:
    return studio.publish.card(lora, repo_id)


@owner_only
def import_hub_lora(studio: Studio, reference: str, name: str = "", trigger: str = "") -> dict:
    job = studio.hub_imports.start(reference, name, trigger)
    return {"job_id": job.id, "status": job.status, "title": job.title}


# ---- layout and wiring ----------------------------------------------------------------------------
def render_import(ctx: UIContext) -> ImportParts:
    i = ImportParts()
    i.hub_ref = gr.Textbox(label="…or a LoRA on the Hugging Face Hub", placeholder="owner/name or owner/name/file"
                           ".safetensors", info="Uses the Name and Trigger word above when given (else the file's "
                           "name and the card's instance_prompt).", elem_id="hub-ref")
    i.hub_import = gr.Button("Import from the Hub")
    i.hub_progress = gr.HTML(elem_id="hub-import-progress")
    i.hub_job, i.hub_done = gr.State(None), gr.State(None)
    i.hub_poll = gr.Timer(1.0, active=False)
    return i


def render_publish(ctx: UIContext) -> PublishParts:
    p = PublishParts()
    with gr.Accordion("Publish to the Hugging Face Hub", open=False, elem_id="publish-panel"):
        gr.Markdown(wording.HUB_HELP)
        if not ctx.studio.settings.private_launch:
            gr.Markdown(f"_{wording.HUB_OWNER_ONLY}_")
        with gr.Row():
            p.repo = gr.Textbox(label="Hub repo", placeholder="your-name/mila-lora", scale=3, elem_id="publish-repo")
            p.public = gr.Checkbox(False, label="Public (a new repo is private otherwise)", scale=1)
        with gr.Row():
            p.publish = gr.Button("Publish", variant="primary", elem_id="publish-button")
            p.preview = gr.Button("Show the card")
        p.publish_progress = gr.HTML(elem_id="publish-progress")
        p.publish_link = gr.Markdown(elem_id="publish-link")
        p.card = gr.Code(language="markdown", label="README.md (the model card)", visible=False, interactive=False)
        p.publish_job = gr.State(None)
        p.publish_poll = gr.Timer(1.0, active=False)
    return p


def listen(ctx: UIContext, i: ImportParts, p: PublishParts, pick, name, trigger) -> None:
    """Wired after the Library tab's own events (their indices stay as they were)."""
    parts = {**vars(i), **vars(p)}
    ctx.on(i.hub_import.click, hub_import_begin, [i.hub_ref, name, trigger],
           HubView.to(parts, "hub_job", "hub_progress", "hub_poll"))
    ctx.on(i.hub_poll.tick, hub_import_tick, [i.hub_job], HubView.to(parts, "hub_progress", "hub_done", "hub_poll"),
           show_progress="hidden")
    ctx.on(p.publish.click, publish_begin, [pick, p.repo, p.public],
           HubView.to(parts, "publish_job", "publish_progress", "publish_link", "publish_poll"))
    ctx.on(p.publish_poll.tick, publish_tick, [p.publish_job],
           HubView.to(parts, "publish_progress", "publish_link", "publish_poll"), show_progress="hidden")
    ctx.on(p.preview.click, publish_preview, [pick, p.repo], HubView.to(parts, "card"))
    expose(ctx.studio, publish_lora, publish_status, publish_card, import_hub_lora)
