"""Remembered settings and the small UI pieces that keep lists, selections and errors honest."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from lora_studio.config import Settings
from lora_studio.services.characters import ImageItem
from lora_studio.services.preferences import Preferences
from lora_studio.studio import Studio
from lora_studio.ui.common import fresh_choices, job_choices
from lora_studio.ui.events import KEEP, Reply, handler_for
from lora_studio.ui.remembered import restored
from lora_studio.ui.selection_tab import caption, details


def test_choices_come_back_after_a_restart(tmp_path):
    prefs = Preferences(tmp_path)
    assert prefs.all() == {}
    assert prefs.set("tester.prompt", "photo of mila_v1 at dusk")
    assert prefs.set("tester.strengths", "0, 0.7, 1.1")
    assert prefs.set("training.steps", 1234)
    assert prefs.set("sheet.gate", False)
    again = Preferences(tmp_path)  # a new process on the same workspace
    assert again.all() == {"tester.prompt": "photo of mila_v1 at dusk", "tester.strengths": "0, 0.7, 1.1",
                           "training.steps": 1234.0, "sheet.gate": False}


def test_only_known_keys_and_bounded_values_are_kept(tmp_path):
    prefs = Preferences(tmp_path)
    for key, value in (("password", "x"), ("training.steps", -5), ("training.steps", "lots"),
                       ("training.learning_rate", float("nan")), ("sheet.gate", "yes"), ("tester.prompt", None)):
        assert prefs.set(key, value) is False
    assert not (tmp_path / "preferences.json").exists()
    assert not prefs.set("tester.prompt", "x" * 5000)  # refused, not cut
    for poison in ("x \ud800 y", "a\x00b", "\u202eevil"):
        assert prefs.set("generate.prompt", poison) is False
    assert not (tmp_path / "preferences.json").exists()
    (tmp_path / "preferences.json").write_text(json.dumps({"tester.seeds": "1, 2", "training.rank": 1e9, "evil": 1}))
    assert prefs.all() == {"tester.seeds": "1, 2"}  # a hand-edited file is read through the same rules
    (tmp_path / "preferences.json").write_text("{broken")
    assert prefs.all() == {}


def test_a_restored_value_must_still_exist():
    choices = [("Mila", "c1"), ("Ana", "c2")]
    assert restored("character", "c1", choices)["value"] == "c1"
    assert restored("character", "gone", choices, latest_if_missing=True)["value"] == "c2"
    assert "value" not in restored("tester.lora", "gone", choices)
    assert restored("training.preset", "Mine", ["Beginner", "Mine"])["value"] == "Mine"
    assert restored("tester.prompt", None, None) == gr.skip()
    assert restored("tester.prompt", "p", None) == "p"


def test_job_lists_read_the_status_now_and_keep_the_users_pick(tmp_path):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        studio.jobs.register("demo", lambda params, reporter: None)
        first = studio.jobs.submit("demo", {}, title="First")
        second = studio.jobs.submit("demo", {}, title="Second")
        labels = job_choices(studio.jobs.list())
        assert labels == [("First · queued", first.id), ("Second · queued", second.id)]
        update, shown = fresh_choices(labels, first.id, None)
        assert "value" not in update  # the pick is kept by the page: a tick never sends back the one it read
        assert fresh_choices(labels, first.id, shown) == (gr.skip(), shown)  # unchanged: nothing is sent
        studio.store.update("jobs", first.id, status="running")  # the worker picked it up
        update, shown = fresh_choices(job_choices(studio.jobs.list()), first.id, shown)
        assert update["choices"][0] == ("First · running", first.id) and "value" not in update
        update, _ = fresh_choices([("Second · queued", second.id)], first.id, shown)
        assert update["value"] == second.id  # the picked job is gone: the latest is shown
        update, _ = fresh_choices([("Second · queued", second.id)], first.id, shown, pick_latest=False)
        assert update["value"] is None


@dataclass
class GalleryView(Reply):
    MESSAGE = "message"
    gallery: list = KEEP
    summary: str = KEEP
    message: str = KEEP


def test_gallery_handlers_keep_the_gallery_and_say_why_beside_it():
    def selection_handler(studio, fail) -> GalleryView:
        if fail:
            raise ValueError("At most 30 images can be selected; deselect one first.")
        return GalleryView(gallery=["gallery"], summary="summary", message="")

    handler = handler_for(None, selection_handler, GalleryView.to({"gallery": 1, "summary": 2, "message": 3}))
    assert handler(False) == (["gallery"], "summary", "")
    gallery, summary, message = handler(True)
    assert gallery == gr.skip() and summary == gr.skip()
    assert "At most 30 images" in message and "ls-notice" in message


def test_captions_and_details_carry_the_mark_distance_and_every_flag():
    score = {"distance": 0.4213, "same_person": True, "face_found": True,
             "flags": [{"code": "blurry", "reason": "The face is blurry (sharpness 12 < 40)."},
                       {"code": "near_duplicate", "reason": "Almost the same as 'smile'."},
                       {"code": "face_too_small", "reason": "The face is 40 px wide."}]}
    item = ImageItem(id="i1", path=None, kind="sheet", caption="front view", category="angle", score=score)
    on, off = caption(item, True), caption(item, False)
    assert on.startswith("✓ ") and off.startswith("○ ")
    assert "face d=0.42" in on and "face too small: The face is 40 px wide." in on  # no flag is cut off
    text = details(item, True)
    assert "0.421" in text and "selected" in text and text.count("⚠") == 3
