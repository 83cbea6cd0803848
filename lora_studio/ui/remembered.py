"""Remembered settings in the page: each remembered component saves its value when it changes, and
a fresh page (also after a restart) gets the saved values back (services.preferences checks them).

Where they are kept depends on who can reach the app. On a private launch (loopback, no link) the
one person at the page owns the workspace, so choices go to `preferences.json` and any browser on
this machine opens where they left off. On a shared link or a Space every visitor keeps their own
in their own browser (`gr.BrowserState`): the server writes nothing, and one visitor's prompt never
opens on another's page. Both paths pass the same `preferences.clean` rules.
"""
from __future__ import annotations

import hashlib

import gradio as gr

from ..services import preferences
from ..studio import Studio
from .common import UIContext, character_choices

PREFERENCES_KEY = "lora-studio-preferences"
PRESETS_KEY = "lora-studio-presets"


def browser_state(studio, key: str, default) -> gr.BrowserState:
    """A value kept in the visitor's browser. Gradio sends the secret to the page, so it hides
    nothing; it is fixed per workspace only so the values still read after a restart."""
    secret = hashlib.sha256(f"{key}:{studio.store.root}".encode()).hexdigest()[:32]
    return gr.BrowserState(default, storage_key=key, secret=secret)


def browser_states(ctx: UIContext) -> None:
    """Made at the top of the page, outside any tab: a tab's components are mounted only when it is
    first opened, and a state not yet mounted has not read the browser's storage when the page loads."""
    ctx.share("own_presets", browser_state(ctx.studio, PRESETS_KEY, []))


def restored(key: str, value, choices: list | None, latest_if_missing: bool = False, blank: bool = False):
    """What a component gets on page load: the saved value if it is still valid, else as it is. A
    `blank` one (made with no value: a number the page would show as 0) is sent its blank."""
    if choices is None:
        return (None if blank else gr.skip()) if value is None else value
    ids = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
    if value in ids:
        return gr.update(choices=choices, value=value)
    if latest_if_missing:
        return gr.update(choices=choices, value=ids[-1] if ids else None)
    return gr.update(choices=choices)


def remember(studio: Studio, key: str, private: bool, value, kept):
    """The change handler of one remembered component (bound to its key; each event is named after it)."""
    if private:
        studio.preferences.set(key, value)
        return gr.skip()
    value = preferences.checked(key, value)
    if value is None:
        return gr.skip()
    kept = preferences.clean(kept)
    return {**kept, key: value}


def choices_for(studio: Studio, key: str, choices, own):
    if key == "training.preset":  # the visitor's own presets are listed after the shared ones
        return studio.training.saved_presets.names(own)
    return choices() if choices else None


def on_load(studio: Studio, entries: tuple, private: bool, browser_kept, own) -> tuple:
    """Each remembered component's saved value (in `entries`' order), if it is still valid."""
    saved = studio.preferences.all() if private else preferences.clean(browser_kept)
    return tuple(restored(key, saved.get(key), choices_for(studio, key, choices, own),
                          latest_if_missing=key == "character", blank=blank) for key, choices, blank in entries)


def wire_preferences(demo: gr.Blocks, ctx: UIContext) -> None:
    studio = ctx.studio
    private = studio.settings.private_launch
    kept = browser_state(studio, PREFERENCES_KEY, {})
    entries = [("character", ctx.character, lambda: character_choices(studio)), *ctx.remembered]
    for key, component, _ in entries:
        ctx.on(component.change, remember, [component, kept], [kept], bound=(key, private),
               name="remember_" + key.replace(".", "_"), show_progress="hidden")
    ctx.on(demo.load, on_load, [kept, ctx.shared["own_presets"]], [component for _, component, _ in entries],
           bound=(tuple((key, choices, component.value is None) for key, component, choices in entries), private))
