"""Saved training presets: kept in the workspace, listed after the built-ins, never replacing them."""
from __future__ import annotations

import json

import pytest

from lora_studio.config import Settings
from lora_studio.jobs import UserError
from lora_studio.services.preset_store import MAX_USER_PRESETS, PresetFields, PresetStore
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio

BUILT_INS = ["Beginner", "Standard", "Expert"]


def form(**changes) -> TrainOptions:
    values = dict(name="", trigger="", steps=1200, rank=8, learning_rate=2e-4, resolution=64,
                  memory_mode="checkpointing", max_usd=3.5)
    values.update(changes)
    return TrainOptions(**values)


def test_a_saved_preset_survives_a_restart_and_lists_after_the_built_ins(tmp_path):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        assert studio.training.presets() == BUILT_INS
        assert studio.training.save_preset("  My   quick one ", form()) == "My quick one"
        studio.training.save_preset("Another", form(steps=10))
    saved = json.loads((tmp_path / "presets.json").read_text())
    assert [p["name"] for p in saved["presets"]] == ["My quick one", "Another"]
    with Studio(Settings(workspace=tmp_path), start=False) as studio:  # a new process, same workspace
        assert studio.training.presets() == BUILT_INS + ["My quick one", "Another"]
        fields = studio.training.preset_fields("My quick one")
        assert {k: fields[k] for k in ("steps", "rank", "learning_rate", "resolution", "memory_mode", "max_usd")} == \
            dict(steps=1200, rank=8, learning_rate=2e-4, resolution=64, memory_mode="checkpointing", max_usd=3.5)
        assert fields["builtin"] is False and "1200 steps" in fields["description"]
        # Saving under the same name (in any letter case) replaces it in place; the list keeps its order.
        studio.training.save_preset("my QUICK one", form(steps=300))
        assert studio.training.preset_fields("My quick one")["steps"] == 300
        assert studio.training.presets() == BUILT_INS + ["my QUICK one", "Another"]
        studio.training.delete_preset("another")
        assert studio.training.presets() == BUILT_INS + ["my QUICK one"]


@pytest.mark.parametrize("name", ["Beginner", "standard", "  EXPERT ", "exPert"])
def test_built_ins_cannot_be_overwritten_or_deleted_in_any_letter_case(tmp_path, name):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        before = studio.training.preset_fields("Expert")
        with pytest.raises(UserError, match="built-in"):
            studio.training.save_preset(name, form(steps=5))
        with pytest.raises(UserError, match="built-in"):
            studio.training.delete_preset(name)
        assert studio.training.preset_fields("Expert") == before
        assert studio.training.presets() == BUILT_INS
        assert not (tmp_path / "presets.json").exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 41, "../etc", "a/b", "-dash first", "semi;colon", "<b>", "a\x00b"])
def test_names_are_bounded_and_plain(tmp_path, name):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        with pytest.raises(UserError, match="preset name"):
            studio.training.save_preset(name, form())


def test_values_are_checked_like_a_training_start(tmp_path):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        for bad, words in ((form(rank=12), "Rank"), (form(memory_mode="turbo"), "memory mode"),
                           (form(steps=None), "whole number"), (form(max_usd=-1), "spending cap"),
                           (form(learning_rate=float("nan")), "Learning rate")):
            with pytest.raises(UserError, match=words):
                studio.training.save_preset("Bad", bad)
        assert studio.training.presets() == BUILT_INS


def test_training_uses_a_saved_preset_and_the_form_overrides_it(tmp_path):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        studio.training.save_preset("Mine", form())
        values = studio.training.resolve(TrainOptions(name="x", trigger="t", preset="mine"))
        assert (values["steps"], values["rank"], values["learning_rate"], values["resolution"]) == (1200, 8, 2e-4, 64)
        assert values["alpha"] == 8.0 and values["memory_mode"] == "checkpointing" and values["max_usd"] == 3.5
        typed = studio.training.resolve(TrainOptions(name="x", trigger="t", preset="Mine", steps=40, max_usd=0))
        assert typed["steps"] == 40 and typed["max_usd"] is None
        builtin = studio.training.resolve(TrainOptions(name="x", trigger="t", preset="beginner"))
        assert builtin["steps"] == 1000 and builtin["resolution"] == 64  # tiny trains at its own size
        with pytest.raises(UserError, match="Unknown preset"):
            studio.training.resolve(TrainOptions(name="x", trigger="t", preset="Nope"))


def test_a_damaged_file_or_entry_leaves_the_rest_usable(tmp_path):
    store = PresetStore(tmp_path, tiny=True, image_size=64)
    (tmp_path / "presets.json").write_text("{not json")
    assert store.names() == BUILT_INS
    good = {"steps": 10, "rank": 4, "learning_rate": 1e-3, "resolution": 64}
    (tmp_path / "presets.json").write_text(json.dumps({"presets": [
        {"name": "Good", **good}, {"name": "Broken", "steps": "many"}, {"name": "standard", **good},
        {"name": "../x", **good}, {"name": "GOOD", **good, "steps": 99}, "not a preset", {"steps": 1}]}))
    assert store.names() == BUILT_INS + ["Good"]
    assert store.get("Standard").steps == 1500


def test_the_number_of_saved_presets_is_bounded(tmp_path):
    store = PresetStore(tmp_path, tiny=True, image_size=64)
    fields = PresetFields(steps=10, rank=4, learning_rate=1e-3, resolution=64)
    for i in range(MAX_USER_PRESETS):
        store.save(f"p{i}", fields)
    with pytest.raises(UserError, match="At most"):
        store.save("one more", fields)
    store.save("p0", fields)  # replacing one is still fine


def test_presets_are_checked_against_the_running_engine_and_bounded_before_they_are_stored(tmp_path):
    with Studio(Settings(engine="replicate", workspace=tmp_path), start=False) as studio:
        for bad, words in ((form(resolution=64), "Resolution"), (form(resolution=1e300), "Resolution"),
                           (form(steps=10**30), "Steps"), (form(rank=256), "Rank")):
            with pytest.raises(UserError, match=words):
                studio.training.save_preset("Bad", bad)
        assert not (tmp_path / "presets.json").exists()
        saved = studio.training.save_preset("Replicate 768", form(resolution=768))
        assert studio.training.resolve(TrainOptions(name="x", trigger="t", preset=saved))["resolution"] == 768
    (tmp_path / "presets.json").write_text(json.dumps({"presets": [
        {"name": "Huge", "steps": 10, "rank": 4, "learning_rate": 1e-3, "resolution": 1e300}]}))
    assert PresetStore(tmp_path, tiny=True, image_size=64).names() == BUILT_INS  # a 301-digit int is never read


@pytest.mark.parametrize("name", ["Stаndard", "ЅТАNDАRD", "ｓｔａｎｄａｒｄ", "Ехрert"])
def test_look_alikes_of_a_built_in_are_refused(tmp_path, name):
    store = PresetStore(tmp_path, tiny=True, image_size=64)
    with pytest.raises(UserError):
        store.save(name, PresetFields(steps=10, rank=4, learning_rate=1e-3, resolution=64))
    assert store.names() == BUILT_INS


def test_a_visitors_own_presets_are_checked_like_the_owners_and_never_written(tmp_path):
    store = PresetStore(tmp_path, tiny=True, image_size=64)
    fields = PresetFields(steps=10, rank=4, learning_rate=1e-3, resolution=64)
    store.save("Owner's", fields)
    own, name = store.save_own(None, "  mine ", fields)
    assert name == "mine" and [p["name"] for p in own] == ["mine"]
    assert store.names(own) == BUILT_INS + ["Owner's", "mine"] and store.get("MINE", own).steps == 10
    with pytest.raises(UserError, match="owner"):
        store.save_own(own, "OWNER'S", fields)
    with pytest.raises(UserError, match="Resolution"):
        store.save_own(own, "big", PresetFields(steps=10, rank=4, learning_rate=1e-3, resolution=1e300))
    forged = own + [{"name": "Stаndard", "steps": 10, "rank": 4, "learning_rate": 1e-3, "resolution": 64},
                    {"name": "x", "steps": "1e300", "rank": 4, "learning_rate": 1e-3, "resolution": 64}, "junk"]
    assert list(store.own(forged)) == ["mine"]  # what a browser sends back is read by the same rules
    assert store.delete_own(own, "Mine") == []
    assert [p["name"] for p in json.loads((tmp_path / "presets.json").read_text())["presets"]] == ["Owner's"]
