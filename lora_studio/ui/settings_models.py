"""Settings, models section: the local model catalogue, downloads and the Hugging Face token.

All of it is the owner's (ui/owner.py): every handler asks `require_owner` first, and a visitor on a
shared link sees the sentence instead. The token goes in through a password field and never comes
back out: replies carry the user name only.
"""
from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from ..services import limits
from ..services.settings import CATALOGUE
from . import wording
from .common import UIContext, error_text, friendly, progress_html
from .owner import NOT_OWNER, is_owner, require_owner

COLUMNS = ["model", "status", "download", "free disk", "GPU need (GB)", "fits", "advice"]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame([[r.repo_id, r.status, r.download_text, r.free_text,
                          "" if r.need_gb is None else f"{r.need_gb:.1f}",
                          {True: "yes", False: "no", None: "no GPU"}[r.fits],
                          r.problem or r.recommendation] for r in rows], columns=COLUMNS)


def token_reply(state) -> dict:
    """Who is logged in and from where: never the token itself."""
    return {"user": state.user, "source": state.source, "text": state.text()}


def render(ctx: UIContext) -> None:
    # Closed until opened: listing asks the Hub and the memory planner, which no page load should wait for.
    with gr.Accordion("Models: downloads and the Hugging Face token (local engine)", open=False) as section:
        _render_controls(ctx, section)


def _render_controls(ctx: UIContext, section: gr.Accordion) -> None:
    studio = ctx.studio
    models = studio.models
    gr.Markdown(wording.MODELS_HELP)
    if not studio.settings.private_launch:
        gr.Markdown(f"_{NOT_OWNER}_")
    token_status = gr.Markdown(elem_id="hf-token-status")
    with gr.Row():
        token = gr.Textbox(label="Hugging Face token", type="password", placeholder="hf_…", scale=3,
                           info=wording.TOKEN_HELP)
        save = gr.Button("Check and save", scale=1)
        forget = gr.Button("Log out", scale=1)
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, elem_id="model-table")
    with gr.Row():
        model = gr.Dropdown([e.repo_id for e in CATALOGUE], value=CATALOGUE[0].repo_id, allow_custom_value=True,
                            label="Model: from the list, any hub id (owner/name) or a folder here", scale=3)
        check = gr.Button("Check", scale=1)
        refresh = gr.Button("Refresh sizes", scale=1)
        download = gr.Button("Download", variant="primary", scale=1)
    job_id = gr.Textbox(visible=False)
    progress = gr.HTML(elem_id="download-progress")
    with gr.Row():
        cancel = gr.Button("Cancel download")
        resume = gr.Button("Resume download")
    poll = gr.Timer(1.0, active=False)

    # ---- API endpoints (named, for gradio_client); each asks for the owner first ----------
    @friendly
    def hf_token_status(request: gr.Request) -> dict:
        require_owner(studio, request)
        state = models.token_status()
        return token_reply(state)

    @friendly
    def hf_login(token: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        state = models.login(token)
        return token_reply(state)

    @friendly
    def hf_logout(request: gr.Request) -> dict:
        require_owner(studio, request)
        state = models.logout()
        return token_reply(state)

    @friendly
    def list_models(refresh: bool, request: gr.Request) -> list:
        require_owner(studio, request)
        return [r.to_dict() for r in models.catalogue(refresh=bool(refresh))]

    @friendly
    def describe_model(model: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        return models.describe(model).to_dict()

    @friendly
    def start_download(model: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        job = models.start_download(model)
        return models.progress(job.id)

    @friendly
    def download_progress(job_id: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        return models.progress(limits.record_id(job_id, "job id"))

    @friendly
    def cancel_download(job_id: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        models.cancel(limits.record_id(job_id, "job id"))
        return models.progress(job_id)

    @friendly
    def resume_download(job_id: str, request: gr.Request) -> dict:
        require_owner(studio, request)
        models.resume(limits.record_id(job_id, "job id"))
        return models.progress(job_id)

    for fn in (hf_token_status, hf_login, hf_logout, list_models, describe_model, start_download,
               download_progress, cancel_download, resume_download):
        gr.api(fn, api_name=fn.__name__)

    # ---- the page ---------------------------------------------------------------------------
    def shown(job):
        if job is None:
            return ""
        data = models.progress(job.id)
        return progress_html(job) + (f"<div class='ls-download'>{html.escape(data['message'] or '')}</div>"
                                     if job.status == "running" else "")

    def latest():
        jobs = models.downloads()
        return jobs[-1] if jobs else None

    def models_open(request: gr.Request):
        if not is_owner(studio, request):
            return NOT_OWNER, gr.skip(), gr.skip(), "", gr.Timer(active=False)
        job = latest()
        try:
            rows = frame(models.catalogue())
        except Exception as exc:  # noqa: BLE001 - the section still opens; the reason is shown
            return error_text(exc), gr.skip(), gr.skip(), "", gr.Timer(active=False)
        running = job is not None and not job.done
        return models.token_status().text(), rows, job.id if job else "", shown(job), gr.Timer(active=running)

    @friendly
    def models_save_token(value, request: gr.Request):
        require_owner(studio, request)
        return models.login(value).text(), ""

    @friendly
    def models_log_out(request: gr.Request):
        require_owner(studio, request)
        return models.logout().text()

    @friendly
    def models_check(value, request: gr.Request):
        require_owner(studio, request)
        row = models.describe(value)
        return frame([row])

    @friendly
    def models_refresh(request: gr.Request):
        require_owner(studio, request)
        return frame(models.catalogue(refresh=True))

    @friendly
    def models_begin(value, request: gr.Request):
        require_owner(studio, request)
        job = models.start_download(value)
        return job.id, shown(job), gr.Timer(active=True)

    def models_tick(current, request: gr.Request):
        if not is_owner(studio, request) or not current:
            return gr.skip(), gr.Timer(active=False)
        try:
            job = studio.jobs.get(limits.record_id(current, "job id"))
        except Exception:  # noqa: BLE001 - a timer must not raise every second; it stops instead
            return gr.skip(), gr.Timer(active=False)
        return shown(job), gr.Timer(active=not job.done)

    @friendly
    def models_stop(current, request: gr.Request):
        require_owner(studio, request)
        if not current:
            raise gr.Error("No download to cancel.")
        return shown(models.cancel(current))

    @friendly
    def models_resume(current, request: gr.Request):
        require_owner(studio, request)
        if not current:
            raise gr.Error("No download to resume.")
        return shown(models.resume(current)), gr.Timer(active=True)

    private = {"api_visibility": "private"}
    section.expand(models_open, None, [token_status, table, job_id, progress, poll], **private)
    save.click(models_save_token, [token], [token_status, token], **private)
    forget.click(models_log_out, None, [token_status], **private)
    check.click(models_check, [model], [table], **private)
    refresh.click(models_refresh, None, [table], **private)
    download.click(models_begin, [model], [job_id, progress, poll], **private)
    poll.tick(models_tick, [job_id], [progress, poll], **private)
    cancel.click(models_stop, [job_id], [progress], **private)
    resume.click(models_resume, [job_id], [progress, poll], **private)
