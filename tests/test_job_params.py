"""Job parameters and a worker's request and result as typed records: one rule writes and reads them
(lora_studio/typed_json.py), a damaged record is a sentence naming its field, and every older shape of
a stored job still reads and runs (services/job_params.py)."""
from __future__ import annotations

import json

import pytest

from lora_studio.config import Settings
from lora_studio.engines.base import TrainRequest, TrainResult
from lora_studio.services.job_params import (CaptionParams, GenerateParams, HubImportParams, PublishParams, SheetParams,
                                             SweepParams, TrainParams)
from lora_studio.store import Store
from lora_studio.studio import Studio
from lora_studio.typed_json import DamagedRecord, from_json, from_json_or_none, to_json
from tests.lora_factory import make_tiny_lora


def through_json(value):
    return json.loads(json.dumps(to_json(value)))


def test_a_train_request_and_result_cross_to_a_worker_and_back_unchanged(tmp_path):
    request = TrainRequest(dataset_dir=tmp_path / "data", output_dir=tmp_path / "out", work_dir=tmp_path,
                           trigger="mila_v1", alpha=8.0, zip_path=tmp_path / "data.zip", stop_after=3)
    assert from_json(TrainRequest, through_json(request)) == request
    result = TrainResult(lora_path=tmp_path / "lora.safetensors", steps=4, final_loss=0.25,
                         extra_files={"kohya": tmp_path / "lora_kohya.safetensors"},
                         metadata={"alpha": 8, "targets": ["attn.to_q"], "nested": {"a": None}})
    back = from_json(TrainResult, through_json(result))
    assert back == result and isinstance(back.extra_files["kohya"], type(tmp_path))


@pytest.mark.parametrize("record, words", [
    ({"width": 64, "height": 64}, "it has no prompt"),  # width, height, steps, guidance: None is the default
    ({"prompt": "x", "width": "64", "height": 64}, "width should be a whole number, not '64'"),
    ({"prompt": "x", "width": 64, "height": 64, "loras": [["lora_1", "strong"]]},
     "loras[0][1] should be a number, not 'strong'"),
    ({"prompt": "x", "width": 64, "height": 64, "loras": [["lora_1"]]}, "loras[0] should hold 2 values, not 1"),
    ({"prompt": "x", "width": 64, "height": 64, "go_fast": 1}, "go_fast should be true or false, not 1"),
    ({"prompt": None, "width": 64, "height": 64}, "prompt should be text, not None"),
    ("x", "should be a table of values, not 'x'"),
])
def test_a_damaged_record_is_a_sentence_naming_the_field(record, words):
    with pytest.raises(DamagedRecord) as caught:
        from_json(GenerateParams, record, "This job's saved settings")
    text = str(caught.value)
    assert text.startswith("This job's saved settings cannot be read: ") and words in text, text
    assert "another version of the app, or damaged" in text
    assert from_json_or_none(GenerateParams, record) is None


def test_every_older_shape_of_a_training_record_still_reads(tmp_path):
    oldest = dict(dataset_id="ds_1", name="mila", trigger="mila_v1", steps=8, rank=4, learning_rate=1e-3,
                  resolution=64, preset="Standard")  # before alpha, memory modes, seeds, placements; a leftover key
    before_alpha = dict(oldest, memory_mode="auto", checkpoint_every=1, sample_every=1, seed=0)
    today = to_json(TrainParams(**{k: v for k, v in before_alpha.items() if k != "preset"}, alpha=8.0, train_on="off",
                                max_usd=None, batch_size=1, estimate={"usd": 0.5}))
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        for record in (oldest, before_alpha, today):
            params = studio.training.recheck(from_json(TrainParams, record))
            assert params.alpha == (8.0 if record is today else 4)  # alpha = rank before it was a setting
            assert params.memory_mode == "auto" and params.seed == 0 and params.train_mlp is True
            assert params.checkpoint_every == (2 if record is oldest else 1) == params.sample_every  # steps / 4
        assert to_json(from_json(TrainParams, today)) == today


def test_old_and_damaged_job_records_run_or_fail_in_words(tmp_path, image_file):
    """Records in older shapes (no go_fast, no spending cap, no estimate, lists where tuples are written) run;
    damaged ones fail with the sentence, and the queue goes on to the next."""
    workspace = tmp_path / "ws"
    with Studio(Settings(workspace=workspace), start=False) as studio:
        lora = studio.library.import_file(make_tiny_lora(tmp_path / "mila.safetensors", seed=2), "mila")
        character = studio.characters.create("Mila")
        studio.characters.add_images(character["id"], [image_file])
    store = Store(workspace)
    base = dict(title="old", status="queued", progress=0.0, message="Queued", error=None, logs=[], outputs={},
                attempts=0)
    jobs = {name: store.insert("jobs", dict(base, kind=kind, params=params))["id"] for name, kind, params in (
        ("generate", "generate", dict(prompt="photo", loras=[[lora["id"], 0.8]], seed=1, width=64, height=64, steps=2,
                                      guidance=3.5)),
        ("sweep", "sweep", dict(lora_id=lora["id"], prompt="photo", strengths=[1.0], seeds=[1], extra=[],
                                include_base=False, steps=2)),
        ("sheet", "sheet", dict(character_id=character["id"], gate=True, max_tries=1, max_distance=0.6, steps=2,
                                slots=[0])),
        ("no prompt", "generate", dict(loras=[], seed=1, width=64, height=64)),
        ("steps as words", "sweep", dict(lora_id=lora["id"], prompt="photo", strengths=[1.0], seeds=[1],
                                         steps="many")),
        ("old training", "train", dict(dataset_id="ds_gone", name="x", trigger="mila_v1", steps=4, rank=4,
                                       learning_rate=1e-3, resolution=64)),
    )}
    store.close()
    with Studio(Settings(workspace=workspace)) as studio:
        done = {name: studio.jobs.wait(job_id, 300) for name, job_id in jobs.items()}
        for name in ("generate", "sweep", "sheet"):
            assert done[name].status == "succeeded", (name, done[name].error)
        assert "cannot be read: it has no prompt" in done["no prompt"].error
        assert "steps should be a whole number, not 'many'" in done["steps as words"].error
        assert "The dataset of this training was deleted" in done["old training"].error
        assert from_json(SweepParams, studio.jobs.get(jobs["sweep"]).params).strengths == (1.0,)
        assert from_json(SheetParams, studio.jobs.get(jobs["sheet"]).params).slots == (0,)


def test_caption_publish_and_hub_import_records_of_the_first_version_still_read():
    """Issue 24's kinds stored plain dicts before they had dataclasses: those records read as them."""
    caption = from_json(CaptionParams, {"character_id": "c1", "image_ids": ["img_1", "img_2"], "model": "built in",
                                        "keep_edited": False})
    assert caption.image_ids == ("img_1", "img_2") and caption.dataset_id is None and not caption.keep_edited
    assert from_json(CaptionParams, {"dataset_id": "ds_1", "model": "Qwen/Qwen3-VL-2B-Instruct"}).image_ids == ()
    assert from_json(PublishParams, {"lora_id": "lora_1", "repo_id": "ada/mila", "private": False}).private is False
    hub = from_json(HubImportParams, {"repo_id": "a/b", "commit": "0" * 40, "path": "x.safetensors", "size": 10,
                                      "name": "x", "trigger": "", "card_size": None})
    assert hub.card_size is None and to_json(hub)["size"] == 10
    with pytest.raises(DamagedRecord, match="size should be a whole number"):
        from_json(HubImportParams, {**to_json(hub), "size": "10"})
