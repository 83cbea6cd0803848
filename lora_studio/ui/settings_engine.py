"""Settings, engine section: which engine and models the app runs, and the Replicate account.

Owner-only: every handler asks `require_owner` first (a stranger reaches any event by its index).
Visitors see the engine read-only, model folders by their name only, and never a token: the token
box is write-only and is emptied by every reply.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..services.settings import ENGINES, EngineChoice
from ..studio import Studio
from . import wording
from .common import UIContext, friendly
from .owner import NOT_OWNER, is_owner, require_owner


def banner_text(studio: Studio) -> str:
    """The engine banner: the tiny engine's warning with the first-run card, or what the engine runs."""
    text = f"{wording.TINY_BANNER}\n\n{wording.FIRST_RUN}" if studio.draws_noise() else studio.engine_description()
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


def render(ctx: UIContext) -> None:
    studio = ctx.studio
    gr.Markdown("### Engine\n" + wording.ENGINE_HELP)
    sources = gr.Markdown(elem_id="setup-sources")
    with gr.Row():
        engine = gr.Radio(list(ENGINES), label="Engine", value=studio.settings.engine, elem_id="setup-engine")
        model = gr.Textbox(label="FLUX.1-dev model (hub id or folder)", elem_id="setup-model",
                           placeholder="black-forest-labs/FLUX.1-dev")
        kontext = gr.Textbox(label="FLUX.1 Kontext model (hub id or folder)", elem_id="setup-kontext",
                             placeholder="black-forest-labs/FLUX.1-Kontext-dev")
    switch = gr.Button("Switch engine", variant="primary", elem_id="setup-switch")
    status = gr.Markdown(elem_id="setup-status")
    with gr.Accordion("Replicate account", open=studio.settings.engine == "replicate"):
        gr.Markdown(wording.REPLICATE_HELP)
        with gr.Row():
            token = gr.Textbox(label="Replicate API token", type="password", placeholder="r8_…", scale=3,
                               elem_id="replicate-token")
            save_token = gr.Button("Check and save", scale=1)
            forget = gr.Button("Forget the saved token", scale=1)
        account = gr.Markdown(elem_id="replicate-account")
        with gr.Row():
            destination = gr.Dropdown(label="Where trained LoRAs go (owner/model)", allow_custom_value=True,
                                      choices=[], scale=3, elem_id="replicate-destination")
            refresh = gr.Button("List my models", scale=1)
            use = gr.Button("Use this model", scale=1)
        with gr.Row():
            new_name = gr.Textbox(label="…or create a private model named", placeholder="mila-loras", scale=3)
            create = gr.Button("Create private model", scale=1)
        replicate_status = gr.Markdown(elem_id="replicate-status")
    editable = [engine, model, kontext, switch, token, save_token, forget, destination, refresh, use, new_name, create]

    def setup_view(request: gr.Request):
        """Fresh values for this visitor (another page may have switched), read-only for visitors."""
        owner = is_owner(studio, request)
        choice = studio.setup.choice(studio.settings)
        hide = (lambda v: Path(v).name if v and Path(v).is_absolute() else v) if not owner else (lambda v: v)
        note = "" if owner else f"_{NOT_OWNER}_"
        locked = [gr.update(interactive=owner) for _ in editable[3:]]
        return (sources_text(studio, owner), note, studio.replicate.status().text(),
                gr.update(value=choice.engine, interactive=owner), gr.update(value=hide(choice.model), interactive=owner),
                gr.update(value=hide(choice.kontext_model), interactive=owner), *locked)

    gr.on(None, setup_view, None, [sources, status, account, *editable], api_visibility="private")

    @friendly
    def switch_engine(engine_name, model_ref, kontext_ref, request: gr.Request):
        require_owner(studio, request)
        current = studio.setup.choice(studio.settings)
        settings = studio.reconfigure(EngineChoice(engine=engine_name or "", model=model_ref or "",
                                                   kontext_model=kontext_ref or "", destination=current.destination))
        detail = ("The model loads with the next job." if settings.engine == "local" else
                  studio.replicate.status().text() if settings.engine == "replicate" else "Pictures are noise.")
        reload = " Reload the page to see the cost fields." if studio.costs.paid != ctx.paid else ""
        return (sources_text(studio, True), wording.SWITCHED.format(engine=settings.engine, detail=detail) + reload,
                banner_text(studio), gr.update(visible=studio.draws_noise()))

    @friendly
    def check_token(value, request: gr.Request):
        require_owner(studio, request)
        return "", studio.replicate.save_token(value or "").text()

    @friendly
    def forget_token(request: gr.Request):
        require_owner(studio, request)
        return "", studio.replicate.forget_token().text()

    @friendly
    def list_models(request: gr.Request):
        require_owner(studio, request)
        found = studio.replicate.destinations()
        current = studio.settings.replicate.destination
        text = f"{len(found)} model(s) in your account." if found else "No models in your account yet: create one."
        return gr.update(choices=found, value=current if current in found else None), text

    def set_destination(value: str) -> tuple:
        current = studio.setup.choice(studio.settings)
        studio.reconfigure(EngineChoice(current.engine, current.model, current.kontext_model, value))
        return gr.update(value=value), f"Trained LoRAs go to **{value}**.", sources_text(studio, True)

    @friendly
    def use_destination(value, request: gr.Request):
        require_owner(studio, request)
        return set_destination(studio.replicate.use_destination(value or ""))

    @friendly
    def create_destination(name, request: gr.Request):
        require_owner(studio, request)
        return set_destination(studio.replicate.create_destination(name or ""))

    switch.click(switch_engine, [engine, model, kontext], [sources, status, ctx.shared["banner"], ctx.shared["first_run"]],
                 api_name="setup_engine")
    save_token.click(check_token, [token], [token, account], api_name="replicate_token")
    forget.click(forget_token, None, [token, account], api_name="replicate_forget_token")
    refresh.click(list_models, None, [destination, replicate_status], api_name="replicate_models")
    use.click(use_destination, [destination], [destination, replicate_status, sources], api_name="replicate_destination")
    create.click(create_destination, [new_name], [destination, replicate_status, sources],
                 api_name="replicate_create_model")
