"""The Gradio Blocks app: header, character picker, the five tabs, the library, and the API.

Each tab is one module with `render(ctx)` (its components, returned by name) and `listen(ctx, parts)`
(its events, each a top-level handler wired through ui/events.py). The order events are wired in is
their index, which pages and strangers call them by: add new ones after the existing ones of a tab.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..studio import Studio
from . import (api, files, library_tab, owner, reference_tab, selection_tab, settings_engine, settings_tab,
               sheet_tab, tester_tab, training_tab, wording)
from .common import UIContext, character_choices, open_tab
from .events import KEEP, Reply
from .host_guard import guard_kwargs
from .remembered import browser_states, wire_preferences
from .style import CSS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@dataclass
class HeaderView(Reply):
    banner: str = KEEP
    first_run: Any = KEEP
    first_run_klein: Any = KEEP
    character: Any = KEEP
    new_name: str = KEEP


def engine_banner(studio: Studio) -> HeaderView:
    """A page opened after a switch (from another page) shows the engine as it is now, and the first-run
    card FLUX.2 [klein] 4B's download size."""
    return HeaderView(banner=settings_engine.banner_text(studio, offer=True),
                      first_run=gr.update(visible=studio.draws_noise()),
                      first_run_klein=gr.update(visible=studio.draws_noise()))


def create_character(studio: Studio, name) -> HeaderView:
    record = studio.characters.create(name)
    return HeaderView(character=gr.update(choices=character_choices(studio), value=record["id"]), new_name="")


def build_app(studio: Studio) -> gr.Blocks:
    owner.install(studio)  # each job is stamped with whoever's event created it (the owner rule for jobs)
    with gr.Blocks(title=wording.TITLE, analytics_enabled=False, delete_cache=files.CACHE_CLEANUP) as demo:
        api.register(studio)  # first, so the public endpoints get their plain names
        gr.Markdown(f"# {wording.TITLE}\n{wording.TAGLINE}")
        banner = gr.Markdown(settings_engine.banner_text(studio), elem_id="engine-banner")
        with gr.Row():
            first_run_klein = gr.Button(wording.KLEIN_BUTTON, size="sm", variant="primary",
                                        visible=studio.draws_noise(), elem_id="first-run-klein")
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
        ctx.share("first_run_klein", first_run_klein)
        browser_states(ctx)  # what a visitor keeps in their own browser (shared links)
        timer = gr.Timer(1.0)
        refreshers = []
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            with gr.Tab("1 · Reference", id="reference"):
                reference_tab.listen(ctx, reference_tab.render(ctx))
            with gr.Tab("2 · Character sheet", id="sheet"):
                sheet_tab.listen(ctx, sheet_tab.render(ctx), timer)
            with gr.Tab("3 · Selection", id="selection") as selection:
                refreshers.append((selection, selection_tab.listen(ctx, selection_tab.render(ctx))))
            with gr.Tab("4 · Training", id="training") as training:
                refreshers.append((training, training_tab.listen(ctx, training_tab.render(ctx), timer)))
            with gr.Tab("5 · Strength tester", id="tester") as tester:
                refreshers.append((tester, tester_tab.listen(ctx, tester_tab.render(ctx), timer)))
            with gr.Tab("Library & generate", id="library") as library:
                refreshers.append((library, library_tab.listen(ctx, library_tab.render(ctx), timer)))
            with gr.Tab("Settings", id="settings"):
                settings_tab.render(ctx)
        header = {"banner": banner, "first_run": first_run, "first_run_klein": first_run_klein, "character": character,
                  "new_name": new_name}
        ctx.on(first_run.click, open_tab, None, [tabs], bound=("settings",), name="open_settings")
        ctx.on(None, engine_banner, None, HeaderView.to(header, "banner", "first_run", "first_run_klein"))
        for tab, refresh in refreshers:
            ctx.on(tab.select, *refresh)
        for wire in ctx.wiring:
            wire()
        ctx.on(create.click, create_character, [new_name], HeaderView.to(header, "character", "new_name"))
        # A fresh page opens where the user left it: their character (else the latest) and their settings.
        wire_preferences(demo, ctx)
        settings_engine.listen_first_run(ctx, header)
    return demo


def launch_kwargs(studio: Studio) -> dict:
    """Only the shipped assets and the workspace's image folders are served; the database, logs,
    datasets and LoRA files never are (see files.py). Uploads above the LoRA limit are refused by
    the server itself (images are further limited to 50 MB). A private launch answers only requests
    addressed to this machine's loopback (host_guard.py: no DNS rebinding)."""
    return dict(css=CSS, **files.launch_paths(studio), **guard_kwargs(studio.settings.private_launch))
