"""The app's workflows on the Replicate engine, against the fake Replicate API on 127.0.0.1."""
from __future__ import annotations

import pytest

from lora_studio.config import ReplicateSettings, Settings
from lora_studio.services.sheet import SheetOptions
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio
from tests.fake_replicate import serving

TOKEN = "r8_journey_SECRET"


@pytest.fixture
def fake(monkeypatch):
    with serving(monkeypatch, TOKEN, prediction_polls=1, training_polls=2) as server:
        yield server


def replicate_studio(tmp_path, fake):
    settings = Settings(engine="replicate", workspace=tmp_path / "ws", replicate=ReplicateSettings(
        base_url=fake.url, destination="me/mila", trainer_version="v1"))
    return Studio(settings)


@pytest.mark.slow  # the whole journey on the fake Replicate
def test_sheet_training_and_generation_on_replicate(tmp_path, fake, astronaut_path):
    with replicate_studio(tmp_path, fake) as studio:
        character = studio.characters.create("Mila")
        studio.characters.add_images(character["id"], [astronaut_path])
        # Gate on, two variations: the fake draws no faces, so each is retried once and says why.
        gated = studio.wait(studio.sheet.start(character["id"], SheetOptions(max_tries=2, slots=(0, 1))).id, 120)
        assert gated.outputs["retried"] == {"no face": 2}
        done = studio.wait(studio.sheet.start(character["id"], SheetOptions(gate=False)).id, 300)
        assert done.outputs["generated"] == 28 and done.outputs["kept"] == 2
        assert len(fake.created("prediction")) == 32
        quick = studio.selection.quick_select(character["id"], 20)
        if quick.count < 20:  # the fake draws flat colours: many are near-duplicates, and it says so
            assert "near-duplicates" in quick.warnings[0]
            studio.selection.set_selection(character["id"], [i.id for i in quick.items[:20]])
        dataset = studio.selection.export_dataset(character["id"], "mila_v1")
        job = studio.wait(studio.training.start(dataset["id"], TrainOptions(
            name="mila", trigger="mila_v1", preset="Beginner", steps=100)).id, 120)
        assert job.outputs["lora_name"] == "mila"
        lora = studio.library.resolve("mila")
        assert lora["remote"] and studio.library.path(lora).is_file()
        training = fake.created("training")[0]
        assert training.input["trigger_word"] == "mila_v1" and training.input["steps"] == 100
        image = studio.generate("photo of mila_v1 at the beach", loras={"mila": 0.85}, seed=4)
        assert image.size == (64, 64) and image.getpixel((0, 0))[0] == (4 * 37) % 256  # the fake paints the seed
        inputs = fake.prediction_inputs()[-1]
        assert inputs["lora_weights"] == lora["remote"] and inputs["lora_scale"] == 0.85
        logs = "\n".join((studio.store.job_dir(j.id) / "log.txt").read_text() for j in studio.jobs.list())
        assert TOKEN not in logs and TOKEN not in (studio.store.root / "studio.json").read_text()


def test_missing_token_fails_the_job_with_a_clear_reason(tmp_path, fake, monkeypatch, astronaut_path):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with replicate_studio(tmp_path, fake) as studio:
        character = studio.characters.create("Mila")
        studio.characters.add_images(character["id"], [astronaut_path])
        job = studio.jobs.wait(studio.sheet.start(character["id"]).id, 60)
        assert job.status == "failed" and "REPLICATE_API_TOKEN" in job.error
