"""The Gradio Blocks app: header, character picker, the five tabs, the library, and the API."""
from __future__ import annotations

import os

import gradio as gr

from ..studio import Studio
from . import (api, files, library_tab, owner, reference_tab, selection_tab, settings_engine, settings_tab,
               sheet_tab, tester_tab, training_tab, wording)
from .common import UIContext, character_choices, friendly
from .host_guard import guard_kwargs
from .remembered import browser_states, wire_preferences
from .style import CSS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_app(studio: Studio) -> gr.Blocks:
    owner.install(studio)  # each job is stamped with whoever's event created it (the owner rule for jobs)
    with gr.Blocks(title=wording.TITLE, analytics_enabled=False, delete_cache=files.CACHE_CLEANUP) as demo:
        api.register(studio)  # first, so the public endpoints get their plain names
        gr.Markdown(f"# {wording.TITLE}\n{wording.TAGLINE}")
        banner = gr.Markdown(settings_engine.banner_text(studio), elem_id="engine-banner")
        first_run = gr.Button(wording.SETUP_BUTTON, size="sm", visible=studio.draws_noise(), elem_id="first-run")
        with gr.Row():
            choices = character_choices(studio)
            character = gr.Dropdown(label="Character", choices=choices,
                                    value=choices[-1][1] if choices else None, scale=3, elem_id="character")
            new_name = gr.Textbox(label="New character name", placeholder="Mila", scale=2)
            create = gr.Button("Create character", scale=1)
        ctx = UIContext(studio=studio, character=character)
        ctx.share("banner", banner)
        ctx.share("first_run", first_run)
        browser_states(ctx)  # what a visitor keeps in their own browser (shared links)
        timer = gr.Timer(1.0)
        refreshers = []
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            with gr.Tab("1 · Reference", id="reference"):
                reference_tab.render(ctx)
            with gr.Tab("2 · Character sheet", id="sheet"):
                sheet_tab.render(ctx, timer)
            with gr.Tab("3 · Selection", id="selection") as selection:
                refreshers.append((selection, selection_tab.render(ctx)))
            with gr.Tab("4 · Training", id="training") as training:
                refreshers.append((training, training_tab.render(ctx, timer)))
            with gr.Tab("5 · Strength tester", id="tester") as tester:
                refreshers.append((tester, tester_tab.render(ctx, timer)))
            with gr.Tab("Library & generate", id="library") as library:
                refreshers.append((library, library_tab.render(ctx, timer)))
            with gr.Tab("Settings", id="settings"):
                settings_tab.render(ctx)
        def open_settings():
            return gr.Tabs(selected="settings")

        first_run.click(open_settings, None, [tabs], api_visibility="private")
        # A page opened after a switch (from another page) shows the engine as it is now.
        def engine_banner():
            return settings_engine.banner_text(studio), gr.update(visible=studio.draws_noise())

        gr.on(None, engine_banner, None, [banner, first_run], api_visibility="private")
        for tab, (fn, inputs, outputs) in refreshers:
            tab.select(fn, inputs, outputs, api_visibility="private")
        for wire in ctx.wiring:
            wire()

        @friendly
        def create_character(name):
            record = studio.characters.create(name)
            return gr.update(choices=character_choices(studio), value=record["id"]), ""

        create.click(create_character, [new_name], [character, new_name], api_visibility="private")
        # A fresh page opens where the user left it: their character (else the latest) and their settings.
        wire_preferences(demo, ctx)
    return demo


def launch_kwargs(studio: Studio) -> dict:
    """Only the shipped assets and the workspace's image folders are served; the database, logs,
    datasets and LoRA files never are (see files.py). Uploads above the LoRA limit are refused by
    the server itself (images are further limited to 50 MB). A private launch answers only requests
    addressed to this machine's loopback (host_guard.py: no DNS rebinding)."""
    return dict(css=CSS, **files.launch_paths(studio), **guard_kwargs(studio.settings.private_launch))
