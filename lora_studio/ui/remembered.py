"""Remembered settings in the page: each remembered component saves its value when it changes, and
a fresh page (also after a restart) gets the saved values back (services.preferences holds them)."""
from __future__ import annotations

import functools

import gradio as gr

from .common import UIContext, character_choices


def _save(studio, key: str, value) -> None:
    studio.preferences.set(key, value)


def restored(key: str, value, choices: list | None, latest_if_missing: bool = False):
    """What a component gets on page load: the saved value if it is still valid, else as it is."""
    if choices is None:
        return gr.skip() if value is None else value
    ids = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
    if value in ids:
        return gr.update(choices=choices, value=value)
    if latest_if_missing:
        return gr.update(choices=choices, value=ids[-1] if ids else None)
    return gr.update(choices=choices)


def wire_preferences(demo: gr.Blocks, ctx: UIContext) -> None:
    studio = ctx.studio
    entries = [("character", ctx.character, lambda: character_choices(studio)), *ctx.remembered]
    for key, component, _ in entries:
        component.change(functools.partial(_save, studio, key), [component], None, api_visibility="private",
                         show_progress="hidden")

    def on_load():
        saved = studio.preferences.all()
        return tuple(restored(key, saved.get(key), choices() if choices else None, latest_if_missing=key == "character")
                     for key, _, choices in entries)

    demo.load(on_load, None, [component for _, component, _ in entries], api_visibility="private")
