"""Workflows on the tiny engine through the Studio facade (no UI)."""
from __future__ import annotations

import json
import time
import zipfile

import pytest

from lora_studio.jobs import UserError
from lora_studio.services.generate import GenerateOptions, Task
from lora_studio.services.sheet import SheetOptions
from tests.lora_factory import make_sdxl_like_lora, make_tiny_lora


def make_character(studio, image_file):
    character = studio.characters.create("Mila")
    studio.characters.add_images(character["id"], [image_file])
    return character["id"]


def test_reference_upload_rules(studio, image_file, tmp_path):
    cid = studio.characters.create("x")["id"]
    with pytest.raises(UserError, match="No image was added"):
        bad = tmp_path / "a.png"
        bad.write_bytes(b"garbage")
        studio.characters.add_images(cid, [bad])
    assert studio.store.find("images") == []
    report = studio.characters.add_images(cid, [image_file, image_file])
    assert len(report.added) == 2
    assert studio.characters.get(cid)["reference_image_id"] == report.added[0]
    studio.characters.choose_reference(cid, report.added[1])
    assert studio.characters.reference_path(cid).name == f"{report.added[1]}.png"
    with pytest.raises(UserError):
        studio.characters.choose_reference(cid, "img_nope")


def test_sheet_stops_and_resumes_keeping_finished_images(studio, image_file):
    cid = make_character(studio, image_file)
    job = studio.sheet.start(cid, SheetOptions(slots=tuple(range(6))))
    while len(studio.store.find("images", kind="sheet")) < 2:
        time.sleep(0.02)
    studio.jobs.cancel(job.id)
    assert studio.jobs.wait(job.id, 60).status == "canceled"
    first = {r["id"]: r["slot"] for r in studio.store.find("images", kind="sheet")}
    assert 2 <= len(first) < 6
    job2 = studio.sheet.start(cid, SheetOptions(slots=tuple(range(6))))
    done = studio.wait(job2.id, 120)
    assert done.outputs["kept"] == len(first) and done.outputs["generated"] == 6 - len(first)
    rows = studio.store.find("images", kind="sheet")
    assert sorted(r["slot"] for r in rows) == list(range(6))
    assert set(first) <= {r["id"] for r in rows}  # the first run's images are still there


def test_selection_rules(studio, image_file):
    cid = make_character(studio, image_file)
    studio.wait(studio.sheet.start(cid).id, 300)
    items = studio.characters.images(cid, "sheet")
    picked = [items[3].id, items[7].id]
    for image_id in picked:
        studio.selection.toggle(cid, image_id)
    removed = items[0].id
    studio.selection.toggle(cid, removed)
    studio.selection.toggle(cid, removed)  # toggled off again: the user excluded it
    state = studio.selection.quick_select(cid, 25)
    assert state.count == 25
    assert set(picked) <= set(state.selected)  # manual picks stay
    assert removed not in state.selected  # and removed images are not re-added
    with pytest.raises(UserError, match="between 20 and 30"):
        studio.selection.quick_select(cid, 40)
    with pytest.raises(UserError, match="not in this character's sheet"):
        studio.selection.set_selection(cid, ["img_elsewhere"])


def test_export_dataset_writes_captions_and_zip(studio, image_file):
    cid = make_character(studio, image_file)
    studio.wait(studio.sheet.start(cid).id, 300)
    with pytest.raises(UserError, match="at least 20"):
        studio.selection.export_dataset(cid, "mila_v1")
    studio.selection.quick_select(cid, 20)
    for bad in ("", "a", "woman", "two words"):
        with pytest.raises(UserError):
            studio.selection.export_dataset(cid, bad)
    dataset = studio.selection.export_dataset(cid, "mila_v1")
    folder = studio.store.root / dataset["dir"]
    captions = sorted(folder.glob("*.txt"))
    assert len(captions) == 20 and all(c.read_text().startswith("photo of mila_v1") for c in captions)
    with zipfile.ZipFile(studio.store.root / dataset["zip"]) as archive:
        assert len(archive.namelist()) == 40


def test_library_import_rename_export_delete(studio, tmp_path):
    path = make_tiny_lora(tmp_path / "style.safetensors", seed=5)
    record = studio.library.import_file(path, "style", "")
    assert record["metadata"]["format"] == "diffusers"
    with pytest.raises(UserError, match="already exists"):
        studio.library.import_file(path, "style")
    with pytest.raises(UserError, match="Stable Diffusion"):
        studio.library.import_file(make_sdxl_like_lora(tmp_path / "sdxl.safetensors"), "sdxl")
    studio.library.rename(record["id"], "film style")
    assert studio.library.resolve("film style")["id"] == record["id"]
    with zipfile.ZipFile(studio.library.export(record["id"])) as archive:
        assert "lora.safetensors" in archive.namelist()
        assert json.loads(archive.read("library.json"))["name"] == "film style"
    studio.library.delete(record["id"])
    assert studio.library.list() == []
    assert not (studio.store.root / "loras" / record["id"]).exists()


def test_generate_with_task_table(studio, tmp_path):
    make_tiny_lora(tmp_path / "mila.safetensors", seed=1)
    studio.library.import_file(tmp_path / "mila.safetensors", "mila", "mila_v1")
    studio.generator.save_task(Task(name="mila", loras={"mila": 0.9}, prompt_prefix="photo of mila_v1,"))
    resolved = studio.generator.resolve(GenerateOptions(prompt="at the beach", task="mila"))
    assert resolved.prompt == "photo of mila_v1, at the beach"
    assert resolved.loras[0][1] == 0.9
    with_task = studio.generate("at the beach", task="mila", seed=3)
    base = studio.generate("photo of mila_v1, at the beach", seed=3)
    same = studio.generate("photo of mila_v1, at the beach", loras={"mila": 0.9}, seed=3)
    assert with_task.size == (64, 64)
    assert list(with_task.getdata()) == list(same.getdata()) != list(base.getdata())
    for bad, match in (({"mila": -5}, "out of range"), ({"nope": 1.0}, "No LoRA named")):
        with pytest.raises(UserError, match=match):
            studio.generate("x", loras=bad)
    with pytest.raises(UserError, match="No task"):
        studio.generate("x", task="unknown")


def test_strength_sweep_measures_and_recommends(studio, tmp_path):
    make_tiny_lora(tmp_path / "mila.safetensors", seed=1)
    make_tiny_lora(tmp_path / "style.safetensors", seed=9)
    studio.library.import_file(tmp_path / "mila.safetensors", "mila")
    studio.library.import_file(tmp_path / "style.safetensors", "style")
    done = studio.sweep("mila", "photo of mila", strengths=(0.0, 0.6, 1.2), seeds=(1, 2))
    analysis = done.outputs["analysis"]
    rows = {r["strength"]: r for r in analysis["rows"]}
    assert rows[0.0]["change"] == 0.0  # strength 0 is the base image exactly
    assert rows[0.6]["change"] < rows[1.2]["change"]
    assert analysis["recommended"] in (0.6, 1.2) and analysis["reason"]
    assert len(done.outputs["cells"]) == 8
    combo = studio.sweep("mila", "photo of mila", strengths=(1.0,), seeds=(1,), extra=(("style", 0.7),))
    alone = studio.sweep("mila", "photo of mila", strengths=(1.0,), seeds=(1,))
    assert combo.outputs["cells"][1]["change"] != alone.outputs["cells"][1]["change"]
    with pytest.raises(UserError, match="not a number"):
        studio.sweep("mila", "p", strengths=("abc",))


def test_reference_face_check_speaks_plainly(studio, image_file, astronaut_path):
    noise = make_character(studio, image_file)
    assert "No face found" in studio.characters.reference_face(noise)
    face = make_character(studio, astronaut_path)
    assert "One face found" in studio.characters.reference_face(face)


def test_out_of_memory_fails_the_job_with_a_lighter_mode(studio):
    import torch

    from lora_studio.services.generate import GenerateOptions

    pipe = studio.engine().manager.text_to_image()

    def exhausted(*_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = pipe.transformer.register_forward_pre_hook(exhausted)
    try:
        job = studio.jobs.wait(studio.generator.start(GenerateOptions(prompt="x")).id, 60)
    finally:
        hook.remove()
    assert job.status == "failed"
    assert "ran out of memory" in job.error and "offload" in job.error
    assert studio.jobs.wait(studio.generator.start(GenerateOptions(prompt="x")).id, 60).status == "succeeded"
