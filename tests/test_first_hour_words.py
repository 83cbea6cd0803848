"""The words a new user reads in their first hour, each where it appears: no claim the app cannot back
(a tiny LoRA "on FLUX.1-dev", a FLUX.1-dev memory plan on the tiny engine, "restart" beside "no restart",
"(NO)" in a worker log), and no silence where something was refused. The page itself is checked in
tests/test_first_hour_browser.py."""
from __future__ import annotations

import zipfile

from gradio_client import Client

from lora_studio.services.training_jobs import TrainOptions
from lora_studio.training.model_card import model_card
from lora_studio.training.worker import started
from lora_studio.ui import settings_engine
from tests.app_server import running_app
from tests.hostile_kit import Browser, dataset_for


def test_a_lora_trained_on_the_tiny_model_says_so_in_its_exported_card(tmp_path, astronaut_path):
    with running_app(tmp_path / "ws") as (studio, url):
        dataset = dataset_for(studio, "Mila", astronaut_path)
        job = studio.training.start(dataset["id"], TrainOptions(name="mila", trigger="mila_v1", steps=2, rank=4,
                                                                checkpoint_every=2, sample_every=2))
        done = studio.wait(job.id, 600)
        record = studio.library.get(done.outputs["lora_id"])
        assert record["metadata"]["base_model"] == "tiny-flux"
        zipped = Client(url, verbose=False).predict(record["id"], api_name="/export_lora")
        with zipfile.ZipFile(zipped) as archive:
            card = archive.read("README.md").decode()
    assert "Base model: `tiny-flux`, LoRA Studio's built-in test model with random weights" in card
    assert "Base model: `black-forest-labs/FLUX.1-dev`" not in card
    unknown = model_card({"trigger": "mila_v1"})  # an older record that never said what it trained on
    assert "Base model: not recorded by the training" in unknown


def test_the_tiny_engines_memory_note_speaks_of_the_tiny_model(studio):
    note = studio.training.memory_plan(64, "auto", 16)
    assert note.startswith("Tiny built-in model") and "FLUX.1-dev" not in note and "Kontext" not in note


def test_the_banner_tells_one_story_about_restarts(studio):
    banner = settings_engine.banner_text(studio)
    assert "needs no restart" in banner and "For real images start with" not in banner
    assert "Start with --model" not in studio.engine_description()


def test_the_worker_log_says_where_it_trains_in_words():
    assert started(1, "cpu") == "Worker process started on the CPU"
    assert started(1, "cuda:1") == "Worker process started on GPU 1"
    assert started(2, "cuda:0").startswith("2 worker processes started on one GPU each")
    assert "(NO)" not in started(1, "cpu") and "MULTI_GPU" not in started(2, "cuda:0")


def test_the_sample_fills_the_character_just_created_and_nothing_else(tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):
        page = Browser(url)
        [create] = [n for n in page.events if n.startswith("create_character_")]  # the page's Create button
        picked, _ = page.outputs(create, "Mila")
        mila = {"id": picked["value"]}
        page.outputs("use_sample", mila["id"])
        assert [c["name"] for c in studio.characters.list()] == ["Mila"]  # no "Sample astronaut" beside it
        assert studio.characters.images(mila["id"], "reference")
        page.outputs("use_sample", mila["id"])  # Mila has images of her own now: the sample is a new character
        assert [c["name"] for c in studio.characters.list()] == ["Mila", "Sample astronaut"]
        page.close()


def test_an_export_without_a_trigger_word_says_so_under_its_button(studio, astronaut_path):
    import gradio as gr

    from lora_studio.ui.events import handler_for
    from lora_studio.ui.selection_tab import ExportView, export_dataset
    from tests.hostile_kit import character_with_sheet

    cid, ids = character_with_sheet(studio, "Mila", astronaut_path)
    studio.selection.set_selection(cid, ids[:20])
    parts = {"message": object(), "exported": object(), "next_step": object()}
    event = handler_for(studio, export_dataset, ExportView.to(parts, "message", "exported", "next_step"))
    message, exported, next_step = event(cid, "")
    assert "Write a trigger word first" in exported and "ls-notice" in exported  # under the button
    assert message == next_step == gr.skip()  # the message beside the gallery, far above, stays as it was


def test_where_it_trains_is_remembered(tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):
        page = Browser(url)
        page.outputs("remember_training_train_on", "isolated", {})
        assert studio.preferences.all()["training.train_on"] == "isolated"
        page.close()
    with running_app(tmp_path / "ws") as (studio, url):  # after a restart, a fresh page gets it back
        page = Browser(url)
        restored = page.outputs("on_load", {}, [])
        assert any(isinstance(v, dict) and v.get("value") == "isolated" and ["In an isolated worker process (a crash "
                   "there cannot stop the app)", "isolated"] in v.get("choices", []) for v in restored)
        page.close()
