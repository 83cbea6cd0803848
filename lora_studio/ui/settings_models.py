"""Settings, models section: the local model catalogue, downloads and the Hugging Face token.

All of it is the owner's (ui/owner.py): every handler is `@owner_only` but the two that keep quiet for
visitors (opening the section, the download timer), and a visitor on a shared link sees the sentence
instead. The token goes in through a password field and never comes back out: replies carry the user
name only. Every event that changes what the table says (a token saved or removed, a download that
ends) sends the table again, and a finished download offers "Use this model", which fills it in
Settings → Engine.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ..jobs import JobView
from ..services import limits
from ..services.settings import CATALOGUE
from ..studio import Studio
from . import wording
from .common import UIContext, progress_html
from .events import KEEP, Reply, expose, failure_text
from .owner import NOT_OWNER, is_owner, owner_only

log = logging.getLogger(__name__)
COLUMNS = ["model", "status", "download", "free disk", "GPU need (GB)", "fits", "advice"]
# Widths that keep every header on one line and give the advice the room that is left (1280-1400 px pages).
WIDTHS = ["22%", "14%", "9%", "9%", "9%", "6%", "31%"]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame([[r.repo_id, r.status, r.download_text, r.free_text,
                          "" if r.need_gb is None else f"{r.need_gb:.1f}",
                          {True: "yes", False: "no", None: "no GPU"}[r.fits],
                          r.problem or r.recommendation] for r in rows], columns=COLUMNS)


def token_reply(state) -> dict:
    """Who is logged in and from where: never the token itself."""
    return {"user": state.user, "source": state.source, "text": state.text()}


class ModelsParts:
    """The section's components, by the names its replies use."""

    section: gr.Accordion
    token_status: gr.Markdown
    token: gr.Textbox
    save: gr.Button
    forget: gr.Button
    table: gr.Dataframe
    model: gr.Dropdown
    check: gr.Button
    refresh: gr.Button
    download: gr.Button
    job_id: gr.Textbox
    progress: gr.HTML
    cancel: gr.Button
    resume: gr.Button
    use: gr.Button
    notice: gr.HTML
    poll: gr.Timer


@dataclass
class ModelsView(Reply):
    """The section's rows, token, download and one notice line: a refusal shows there, beside what it
    refused, and the next event that works clears it (an error popup would leave an "Error" badge on
    the outputs until something else happens to update them)."""

    MESSAGE = "notice"
    notice: str = KEEP
    token_status: str = KEEP
    table: pd.DataFrame = KEEP
    job_id: str = KEEP
    progress: str = KEEP
    poll: Any = KEEP
    token: str = KEEP
    use: Any = KEEP


@dataclass
class ChosenModel(Reply):
    """Settings → Engine's form, filled with a downloaded model; a refusal shows in the models' notice."""

    MESSAGE = "notice"
    notice: str = KEEP
    engine: Any = KEEP
    model: Any = KEEP
    kontext: Any = KEEP
    status: str = KEEP


# ---- API endpoints (named, for gradio_client) ------------------------------------------------------
@owner_only
def hf_token_status(studio: Studio) -> dict:
    return token_reply(studio.models.token_status())


@owner_only
def hf_login(studio: Studio, token: str) -> dict:
    return token_reply(studio.models.login(token))


@owner_only
def hf_logout(studio: Studio) -> dict:
    return token_reply(studio.models.logout())


@owner_only
def list_models(studio: Studio, refresh: bool) -> list:
    return [r.to_dict() for r in studio.models.catalogue(refresh=bool(refresh))]


@owner_only
def describe_model(studio: Studio, model: str) -> dict:
    return studio.models.describe(model).to_dict()


@owner_only
def start_download(studio: Studio, model: str) -> dict:
    job = studio.models.start_download(model)
    return studio.models.progress(job.id)


@owner_only
def download_progress(studio: Studio, job_id: str) -> dict:
    return studio.models.progress(limits.record_id(job_id, "job id"))


@owner_only
def cancel_download(studio: Studio, job_id: str) -> dict:
    studio.models.cancel(limits.record_id(job_id, "job id"))
    return studio.models.progress(job_id)


@owner_only
def resume_download(studio: Studio, job_id: str) -> dict:
    studio.models.resume(limits.record_id(job_id, "job id"))
    return studio.models.progress(job_id)


# ---- the page ---------------------------------------------------------------------------------------
def shown(studio: Studio, job: JobView | None) -> str:
    if job is None:
        return ""
    data = studio.models.progress(job.id)
    return progress_html(job) + (f"<div class='ls-download'>{html.escape(data['message'] or '')}</div>"
                                 if job.status == "running" else "")


def latest(studio: Studio) -> JobView | None:
    jobs = studio.models.downloads()
    return jobs[-1] if jobs else None


def table(studio: Studio, refresh: bool = False) -> pd.DataFrame:
    """Every row as it is now: the catalogue and each model downloaded here."""
    return frame(studio.models.rows(refresh))


def offer(job: JobView | None) -> Any:
    """"Use this model" is shown for a download that finished."""
    return gr.update(visible=bool(job and job.status == "succeeded"))


def models_open(studio: Studio, request: gr.Request) -> ModelsView:
    """Serves visitors too: they read the sentence, and nothing asks the Hub for them."""
    if not is_owner(studio, request):
        return ModelsView(token_status=NOT_OWNER, progress="", poll=gr.Timer(active=False), use=offer(None))
    job = latest(studio)
    try:
        rows = table(studio)
    except Exception as exc:  # noqa: BLE001 - the section still opens; the reason is shown (and logged)
        return ModelsView(token_status=failure_text(exc, "models_open"), progress="", poll=gr.Timer(active=False))
    running = job is not None and not job.done
    return ModelsView(token_status=studio.models.token_status().text(), table=rows, job_id=job.id if job else "",
                      progress=shown(studio, job), poll=gr.Timer(active=running), use=offer(job), notice="")


@owner_only
def models_save_token(studio: Studio, value) -> ModelsView:
    """A new token changes which gated models answer: the rows are asked again."""
    state = studio.models.login(value)
    return ModelsView(token_status=state.text(), token="", table=table(studio, refresh=True), notice="")


@owner_only
def models_log_out(studio: Studio) -> ModelsView:
    state = studio.models.logout()
    return ModelsView(token_status=state.text(), table=table(studio, refresh=True), notice="")


@owner_only
def models_check(studio: Studio, value) -> ModelsView:
    return ModelsView(table=frame([studio.models.describe(value)]), notice="")


@owner_only
def models_refresh(studio: Studio) -> ModelsView:
    return ModelsView(table=table(studio, refresh=True), notice="")


@owner_only
def models_begin(studio: Studio, value) -> ModelsView:
    job = studio.models.start_download(value)
    return ModelsView(job_id=job.id, progress=shown(studio, job), poll=gr.Timer(active=True), use=offer(None),
                      notice="")


def models_tick(studio: Studio, current, request: gr.Request) -> ModelsView:
    """Serves visitors too: their timer stops without a word, as it must not raise every second. The
    tick that finds the download ended (finished, canceled or failed) sends the table again."""
    if not is_owner(studio, request) or not current:
        return ModelsView(poll=gr.Timer(active=False))
    try:
        job = studio.jobs.get(limits.record_id(current, "job id"))
    except Exception:  # noqa: BLE001 - a timer must not raise every second; it stops instead
        return ModelsView(poll=gr.Timer(active=False))
    if not job.done:
        return ModelsView(progress=shown(studio, job), poll=gr.Timer(active=True))
    try:
        rows = table(studio)
    except Exception as exc:  # noqa: BLE001 - the download's end is still shown; the rows stay as they were
        log.warning("the models table could not be read again: %s", failure_text(exc, "models_tick"))
        rows = KEEP
    return ModelsView(progress=shown(studio, job), poll=gr.Timer(active=False), table=rows, use=offer(job))


@owner_only
def models_stop(studio: Studio, current) -> ModelsView:
    if not current:
        raise gr.Error("No download to cancel.")
    job = studio.models.cancel(current)
    # The tick that sees it end sends the rows; a download canceled before it started ends here.
    return ModelsView(progress=shown(studio, job), poll=gr.Timer(active=True), notice="")


@owner_only
def models_resume(studio: Studio, current) -> ModelsView:
    if not current:
        raise gr.Error("No download to resume.")
    return ModelsView(progress=shown(studio, studio.models.resume(current)), poll=gr.Timer(active=True),
                      use=offer(None), notice="")


@owner_only
def models_use(studio: Studio, current) -> ChosenModel:
    """The finished download in Settings → Engine's form, as the user would type it; Switch engine loads it."""
    if not current:
        raise gr.Error("No finished download to use.")
    repo_id, kontext = studio.models.chosen(limits.record_id(current, "job id"))
    field = "Kontext model" if kontext else "model"
    status = wording.USE_MODEL.format(model=repo_id, field=field)
    if kontext:
        return ChosenModel(engine="local", kontext=repo_id, status=status, notice="")
    return ChosenModel(engine="local", model=repo_id, status=status, notice="")


def render(ctx: UIContext) -> ModelsParts:
    # Closed until opened: listing asks the Hub and the memory planner, which no page load should wait for.
    p = ModelsParts()
    with gr.Accordion("Models: downloads and the Hugging Face token (local engine)", open=False) as p.section:
        gr.Markdown(wording.MODELS_HELP)
        if not ctx.studio.settings.private_launch:
            gr.Markdown(f"_{NOT_OWNER}_")
        p.token_status = gr.Markdown(elem_id="hf-token-status")
        with gr.Row():
            p.token = gr.Textbox(label="Hugging Face token", type="password", placeholder="hf_…", scale=3,
                                 info=wording.TOKEN_HELP)
            p.save = gr.Button("Check and save", scale=1)
            p.forget = gr.Button("Log out", scale=1)
        p.table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, elem_id="model-table",
                               column_widths=WIDTHS)
        with gr.Row():
            p.model = gr.Dropdown([e.repo_id for e in CATALOGUE], value=CATALOGUE[0].repo_id, allow_custom_value=True,
                                  label="Model: from the list, any hub id (owner/name) or a folder here", scale=3)
            p.check = gr.Button("Check", scale=1)
            p.refresh = gr.Button("Refresh sizes", scale=1)
            p.download = gr.Button("Download", variant="primary", scale=1)
        p.job_id = gr.Textbox(visible=False)
        p.progress = gr.HTML(elem_id="download-progress")
        with gr.Row():
            p.cancel = gr.Button("Cancel download")
            p.resume = gr.Button("Resume download")
            p.use = gr.Button(wording.USE_MODEL_BUTTON, variant="primary", visible=False, elem_id="use-model")
        p.notice = gr.HTML(elem_id="models-notice")
        p.poll = gr.Timer(1.0, active=False)
    return p


def listen(ctx: UIContext, p: ModelsParts) -> None:
    expose(ctx.studio, hf_token_status, hf_login, hf_logout, list_models, describe_model, start_download,
           download_progress, cancel_download, resume_download)
    ctx.on(p.section.expand, models_open, None,
           ModelsView.to(p, "token_status", "table", "job_id", "progress", "poll", "use", "notice"))
    ctx.on(p.save.click, models_save_token, [p.token], ModelsView.to(p, "token_status", "token", "table", "notice"))
    ctx.on(p.forget.click, models_log_out, None, ModelsView.to(p, "token_status", "table", "notice"))
    ctx.on(p.check.click, models_check, [p.model], ModelsView.to(p, "table", "notice"))
    ctx.on(p.refresh.click, models_refresh, None, ModelsView.to(p, "table", "notice"))
    ctx.on(p.download.click, models_begin, [p.model], ModelsView.to(p, "job_id", "progress", "poll", "use", "notice"))
    ctx.on(p.poll.tick, models_tick, [p.job_id], ModelsView.to(p, "progress", "poll", "table", "use"),
           show_progress="hidden")
    ctx.on(p.cancel.click, models_stop, [p.job_id], ModelsView.to(p, "progress", "poll", "notice"))
    ctx.on(p.resume.click, models_resume, [p.job_id], ModelsView.to(p, "progress", "poll", "use", "notice"))
    engine = {name: ctx.shared[f"setup.{name}"] for name in ("engine", "model", "kontext", "status")}
    ctx.on(p.use.click, models_use, [p.job_id], ChosenModel.to({**engine, "notice": p.notice}))
