"""Settings, engine section: which engine and models the app runs, and the Replicate account.

Owner-only: every handler that changes something is marked `@owner_only` (a stranger reaches any
event by its index); only the view a page opens with serves visitors. They see the engine read-only,
model folders by their name only, and never a token: the token box is write-only and is emptied by
every reply.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..services.settings import ENGINES, EngineChoice
from ..studio import Studio
from . import wording
from .common import UIContext
from .events import KEEP, Reply, expose
from .owner import NOT_OWNER, is_owner, owner_only


class EngineParts:
    """The section's components, by the names its replies use."""

    sources: gr.Markdown
    engine: gr.Radio
    model: gr.Textbox
    kontext: gr.Textbox
    switch: gr.Button
    status: gr.Markdown
    token: gr.Textbox
    save_token: gr.Button
    forget: gr.Button
    account: gr.Markdown
    destination: gr.Dropdown
    refresh: gr.Button
    use: gr.Button
    new_name: gr.Textbox
    create: gr.Button
    replicate_status: gr.Markdown
    banner: gr.Markdown
    first_run: gr.Button
    first_run_klein: gr.Button


EDITABLE = ("engine", "model", "kontext", "switch", "token", "save_token", "forget", "destination", "refresh", "use",
            "new_name", "create")


@dataclass
class EngineView(Reply):
    sources: str = KEEP
    status: str = KEEP
    account: str = KEEP
    engine: Any = KEEP
    model: Any = KEEP
    kontext: Any = KEEP
    switch: Any = KEEP
    token: str = KEEP
    save_token: Any = KEEP
    forget: Any = KEEP
    destination: Any = KEEP
    refresh: Any = KEEP
    use: Any = KEEP
    new_name: Any = KEEP
    create: Any = KEEP
    replicate_status: str = KEEP
    banner: str = KEEP
    first_run: Any = KEEP
    first_run_klein: Any = KEEP


def banner_text(studio: Studio, offer: bool = False) -> str:
    """The engine banner: the tiny engine's warning with the first-run card, or what the engine runs. With
    `offer`, the card says FLUX.2 [klein] 4B's size (counted from the model: not while the page is built)."""
    if studio.draws_noise():
        text = f"{wording.TINY_BANNER}\n\n{wording.FIRST_RUN}"
        if offer:
            text += f"\n\n{studio.models.default_offer()}"
    else:
        text = studio.engine_description()
    if studio.gpu_note():  # on a ZeroGPU Space: how long jobs are split into GPU calls
        text += f"\n\n{studio.gpu_note()}"
    for note in studio.startup_notes():  # a settings file set aside at this start: which, and where
        text += f"\n\n**Settings file set aside:** {note}"
    return text


def sources_text(studio: Studio, owner: bool) -> str:
    """Each value and where it came from; folders by their name only for visitors (no server paths)."""
    lines = []
    for row in studio.setup.rows(studio.settings):
        if not owner and row.value and Path(row.value).is_absolute():
            row = type(row)(row.name, Path(row.value).name, row.source)
        lines.append(f"- {row.describe()}")
    note = f"\n\n_{studio.setup.note}_" if studio.setup.note else ""
    return "\n".join(lines) + note


def setup_view(studio: Studio, request: gr.Request) -> EngineView:
    """Fresh values for this visitor (another page may have switched), read-only for visitors."""
    owner = is_owner(studio, request)
    choice = studio.setup.choice(studio.settings)
    hide = (lambda v: Path(v).name if v and Path(v).is_absolute() else v) if not owner else (lambda v: v)
    locked = {name: gr.update(interactive=owner) for name in EDITABLE[3:]}
    return EngineView(sources=sources_text(studio, owner), status="" if owner else f"_{NOT_OWNER}_",
                      account=studio.replicate.status().text(),
                      engine=gr.update(value=choice.engine, interactive=owner),
                      model=gr.update(value=hide(choice.model), interactive=owner),
                      kontext=gr.update(value=hide(choice.kontext_model), interactive=owner), **locked)


@owner_only
def switch_engine(studio: Studio, engine_name, model_ref, kontext_ref) -> EngineView:
    current = studio.setup.choice(studio.settings)
    settings = studio.reconfigure(EngineChoice(engine=engine_name or "", model=model_ref or "",
                                               kontext_model=kontext_ref or "", destination=current.destination))
    detail = ("The model loads with the next job." if settings.engine == "local" else
              studio.replicate.status().text() if settings.engine == "replicate" else "Pictures are noise.")
    return EngineView(sources=sources_text(studio, True),
                      status=wording.SWITCHED.format(engine=settings.engine, detail=detail),
                      banner=banner_text(studio), first_run=gr.update(visible=studio.draws_noise()),
                      first_run_klein=gr.update(visible=studio.draws_noise()))


@owner_only
def first_run_klein(studio: Studio) -> dict:
    """The first-run card's button: FLUX.2 [klein] 4B and its base downloaded, then the app switched to it."""
    jobs, sentence = studio.models.start_default()
    return {"jobs": [j.id for j in jobs], "message": sentence, "engine": studio.settings.engine}


@owner_only
def first_run_klein_clicked(studio: Studio) -> EngineView:
    """The same from the page: what happens next, in the banner."""
    _, sentence = studio.models.start_default()
    return EngineView(banner=f"{banner_text(studio)}\n\n**{sentence}**",
                      first_run=gr.update(visible=studio.draws_noise()),
                      first_run_klein=gr.update(visible=studio.draws_noise()))


@owner_only
def check_token(studio: Studio, value) -> EngineView:
    return EngineView(token="", account=studio.replicate.save_token(value or "").text())


@owner_only
def forget_token(studio: Studio) -> EngineView:
    return EngineView(token="", account=studio.replicate.forget_token().text())


@owner_only
def list_models(studio: Studio) -> EngineView:
    found = studio.replicate.destinations()
    current = studio.settings.replicate.destination
    text = f"{len(found)} model(s) in your account." if found else "No models in your account yet: create one."
    return EngineView(destination=gr.update(choices=found, value=current if current in found else None),
                      replicate_status=text)


def set_destination(studio: Studio, value: str) -> EngineView:
    current = studio.setup.choice(studio.settings)
    studio.reconfigure(EngineChoice(current.engine, current.model, current.kontext_model, value))
    return EngineView(destination=gr.update(value=value), replicate_status=f"Trained LoRAs go to **{value}**.",
                      sources=sources_text(studio, True))


@owner_only
def use_destination(studio: Studio, value) -> EngineView:
    return set_destination(studio, studio.replicate.use_destination(value or ""))


@owner_only
def create_destination(studio: Studio, name) -> EngineView:
    return set_destination(studio, studio.replicate.create_destination(name or ""))


def render(ctx: UIContext) -> EngineParts:
    studio = ctx.studio
    p = EngineParts()
    p.banner, p.first_run, p.first_run_klein = (ctx.shared[name] for name in ("banner", "first_run",
                                                                              "first_run_klein"))
    gr.Markdown("### Engine\n" + wording.ENGINE_HELP)
    p.sources = gr.Markdown(elem_id="setup-sources")
    with gr.Row():
        p.engine = gr.Radio(list(ENGINES), label="Engine", value=studio.settings.engine, elem_id="setup-engine")
        p.model = gr.Textbox(label="Model (hub id or folder): FLUX.2 [klein] or FLUX.1-dev", elem_id="setup-model",
                             placeholder="black-forest-labs/FLUX.2-klein-4B")
        p.kontext = gr.Textbox(label="Second model (optional): FLUX.1 Kontext for FLUX.1's sheet, or Klein's other "
                                     "flavour (blank: found on disk)", elem_id="setup-kontext",
                               placeholder="black-forest-labs/FLUX.1-Kontext-dev")
    p.switch = gr.Button("Switch engine", variant="primary", elem_id="setup-switch")
    p.status = gr.Markdown(elem_id="setup-status")
    for name in ("engine", "model", "kontext", "status"):  # Settings → Models fills them ("Use this model")
        ctx.share(f"setup.{name}", getattr(p, name))
    with gr.Accordion("Replicate account", open=studio.settings.engine == "replicate"):
        gr.Markdown(wording.REPLICATE_HELP)
        with gr.Row():
            p.token = gr.Textbox(label="Replicate API token", type="password", placeholder="r8_…", scale=3,
                                 elem_id="replicate-token")
            p.save_token = gr.Button("Check and save", scale=1)
            p.forget = gr.Button("Forget the saved token", scale=1)
        p.account = gr.Markdown(elem_id="replicate-account")
        with gr.Row():
            p.destination = gr.Dropdown(label="Where trained LoRAs go (owner/model)", allow_custom_value=True,
                                        choices=[], scale=3, elem_id="replicate-destination")
            p.refresh = gr.Button("List my models", scale=1)
            p.use = gr.Button("Use this model", scale=1)
        with gr.Row():
            p.new_name = gr.Textbox(label="…or create a private model named", placeholder="mila-loras", scale=3)
            p.create = gr.Button("Create private model", scale=1)
        p.replicate_status = gr.Markdown(elem_id="replicate-status")
    return p


def listen(ctx: UIContext, p: EngineParts) -> None:
    ctx.on(None, setup_view, None, EngineView.to(p, "sources", "status", "account", *EDITABLE))
    ctx.on(p.switch.click, switch_engine, [p.engine, p.model, p.kontext],
           EngineView.to(p, "sources", "status", "banner", "first_run", "first_run_klein"), api_name="setup_engine")
    ctx.on(p.save_token.click, check_token, [p.token], EngineView.to(p, "token", "account"), api_name="replicate_token")
    ctx.on(p.forget.click, forget_token, None, EngineView.to(p, "token", "account"), api_name="replicate_forget_token")
    ctx.on(p.refresh.click, list_models, None, EngineView.to(p, "destination", "replicate_status"),
           api_name="replicate_models")
    chosen = EngineView.to(p, "destination", "replicate_status", "sources")
    ctx.on(p.use.click, use_destination, [p.destination], chosen, api_name="replicate_destination")
    ctx.on(p.create.click, create_destination, [p.new_name], chosen, api_name="replicate_create_model")


def listen_first_run(ctx: UIContext, header: dict) -> None:
    """The first-run card's FLUX.2 [klein] button and its named endpoint; wired by the app after every
    other event, so the indices strangers reach earlier events by stay as they were."""
    expose(ctx.studio, first_run_klein)
    ctx.on(header["first_run_klein"].click, first_run_klein_clicked, None,
           EngineView.to(header, "banner", "first_run", "first_run_klein"))
