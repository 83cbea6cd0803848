"""How handlers become events (ui/events.py) and the one owner check (ui/owner.py).

A bug in a handler reaches the log with its traceback while the user reads a sentence; a refusal is
logged nowhere. Every owner-only event is refused to a stranger before its handler runs, and every
event of the Settings sections is owner-only unless it is one of the views that serve visitors too.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import gradio as gr
import pytest

from lora_studio.config import Settings
from lora_studio.services import UserError
from lora_studio.studio import Studio
from lora_studio.ui import wording
from lora_studio.ui.app import build_app
from lora_studio.ui.events import KEEP, Reply, handler_for
from lora_studio.ui.owner import NOT_OWNER, owner_only
from tests.hostile_kit import unchanged

SETTINGS_MODULES = ("lora_studio.ui.settings_engine", "lora_studio.ui.settings_models", "lora_studio.ui.settings_prices")
VISITOR_VIEWS = {"setup_view", "models_open", "models_tick"}  # they answer visitors read-only, never change anything


@dataclass
class PanelView(Reply):
    MESSAGE = "message"
    gallery: list = KEEP
    message: str = KEEP


PANEL = {"gallery": "gallery component", "message": "message component"}


def broken_lookup(studio, character_id):
    return {}["character_id"]  # a bug: a bare KeyError


def test_a_bare_key_error_reaches_the_log_with_its_traceback_and_the_user_reads_a_sentence(caplog):
    popup = handler_for(None, broken_lookup, [object()])
    with caplog.at_level(logging.ERROR, logger="lora_studio.ui.events"):
        with pytest.raises(gr.Error) as raised:
            popup("c1")
    [record] = caplog.records
    assert record.exc_info and record.exc_info[0] is KeyError
    assert "Traceback" in caplog.text and "broken_lookup" in caplog.text and "KeyError" in caplog.text
    said = str(raised.value.message)
    assert said == wording.INTERNAL_ERROR.format(error="KeyError: character_id")
    assert said.endswith(".") and "log" in said

    caplog.clear()
    beside = handler_for(None, broken_lookup, PanelView.to(PANEL))
    with caplog.at_level(logging.ERROR, logger="lora_studio.ui.events"):
        gallery, message = beside("c1")
    assert caplog.records[0].exc_info[0] is KeyError
    assert gallery == gr.skip() and "Something went wrong inside LoRA Studio" in message and "ls-notice" in message


def test_a_refusal_is_shown_as_it_is_and_logs_nothing(caplog):
    def refuse(studio, value):
        raise UserError("Pick a character first.")

    with caplog.at_level(logging.DEBUG, logger="lora_studio.ui.events"):
        with pytest.raises(gr.Error) as raised:
            handler_for(None, refuse, [object()])("x")
        gallery, message = handler_for(None, refuse, PanelView.to(PANEL))("x")
    assert str(raised.value.message) == "Pick a character first."
    assert gallery == gr.skip() and "Pick a character first." in message
    assert caplog.records == []


def test_a_reply_names_its_outputs_and_refuses_one_the_event_does_not_show(caplog):
    def answer(studio, with_message):
        return PanelView(gallery=["a"], message="done") if with_message else PanelView(gallery=["a"])

    assert handler_for(None, answer, PanelView.to(PANEL, "gallery"))(False) == ["a"]  # one output: the value itself
    both = handler_for(None, answer, PanelView.to(PANEL, "message", "gallery"))
    assert both(True) == ("done", ["a"])  # in the event's order, not the class's
    assert both(False) == (gr.skip(), ["a"])  # a field left at KEEP sends nothing
    with caplog.at_level(logging.ERROR, logger="lora_studio.ui.events"):
        with pytest.raises(gr.Error):
            handler_for(None, answer, PanelView.to(PANEL, "gallery"))(True)  # sets `message` it cannot show
    assert caplog.records  # a wiring bug is a bug: logged
    with pytest.raises(TypeError):
        PanelView.to(PANEL, "galery")


def test_owner_only_adds_the_request_and_checks_it_first(tmp_path):
    calls = []

    @owner_only
    def change(studio, value):
        calls.append(value)
        return value

    assert list(inspect.signature(change).parameters) == ["studio", "value", "request"]
    with Studio(Settings(workspace=tmp_path / "shared", host="0.0.0.0")) as shared:
        with pytest.raises(gr.Error) as raised:
            handler_for(shared, change, [object()])("x", None)
        assert str(raised.value.message) == NOT_OWNER and calls == []
    with Studio(Settings(workspace=tmp_path / "private")) as private:
        assert handler_for(private, change, [object()])("y", None) == "y" and calls == ["y"]


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    studio = Studio(Settings(workspace=tmp_path_factory.mktemp("owner") / "ws", host="0.0.0.0"))
    demo = build_app(studio)
    yield studio, demo
    studio.close()


def test_every_settings_event_is_the_owners_unless_it_serves_visitors(shared_app):
    _, demo = shared_app
    settings = [f for f in demo.fns.values() if f.fn.__module__ in SETTINGS_MODULES]
    assert len(settings) >= 24
    for block_fn in settings:
        assert block_fn.fn.owner_only or block_fn.name in VISITOR_VIEWS, (
            f"{block_fn.api_name} changes the owner's settings: mark its handler @owner_only")
    assert not any(f.fn.owner_only for f in demo.fns.values() if f.name in VISITOR_VIEWS)


def test_every_hub_event_is_the_owners(shared_app):
    """Publishing and Hub imports use the owner's Hugging Face token: none of their events serves anyone else."""
    _, demo = shared_app
    hub = [f for f in demo.fns.values() if f.fn.__module__ == "lora_studio.ui.library_hub" or f.name == "hub_imported"]
    assert len(hub) == 10 and all(f.fn.owner_only for f in hub), [f.name for f in hub if not f.fn.owner_only]


def test_a_stranger_is_refused_every_owner_only_event_before_it_runs(shared_app):
    studio, demo = shared_app
    owners = [f for f in demo.fns.values() if f.fn.owner_only]
    assert len(owners) == 37  # 25 of the Settings sections (and the first-run card's FLUX.2 [klein] button and
    # its endpoint), 10 of the Library's Hub panel (publish, import)
    with unchanged(studio.store.root):
        for block_fn in owners:
            params = inspect.signature(block_fn.fn).parameters
            try:
                answer = block_fn.fn(*[None] * len(params))  # every input empty and no request: a stranger
            except gr.Error as raised:
                said = str(raised.message)
            else:  # refused in the section's notice (Settings → Models), every other output kept
                answer = answer if isinstance(answer, tuple) else (answer,)
                assert all(v == gr.skip() or "ls-notice" in str(v) for v in answer), block_fn.api_name
                said = " ".join(str(v) for v in answer if isinstance(v, str))
            assert NOT_OWNER in said, block_fn.api_name
    assert studio.models.downloads() == []
