"""Training captions: the identity rule, the captioner job (tiny Qwen3-VL built in code, and tiny ones
downloaded from a fake hub as catalogue captioners), edits and find/replace, and the dataset using them."""
from __future__ import annotations

import zipfile

import pytest

from lora_studio.jobs import UserError
from lora_studio.services.caption_rules import (TRIGGER_TOKEN, clean_caption, generated, identity_words, retrigger,
                                               stored)
from lora_studio.services.sheet import SheetOptions
from tests.fake_hub import FakeHub, point_client_at

SMALL, BETTER = "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"


# ---- the rule: what a caption may say --------------------------------------------------------
@pytest.mark.parametrize("raw, kept, gone", [
    ("The image shows a young Asian woman with long wavy brown hair and blue eyes wearing a red dress, sitting "
     "in a café, soft window light, smiling.", ["a woman wearing a red dress", "café", "soft window light", "smiling"],
     ["young", "Asian", "hair", "blue", "image shows"]),
    ("A beautiful blonde woman in a leather jacket on a city street at night, her eyes closed, medium shot.",
     ["leather jacket", "eyes closed", "medium shot"], ["beautiful", "blonde"]),
    ("Close-up of a woman with freckles and high cheekbones, eyebrows raised in surprise, studio lighting.",
     ["eyebrows raised", "studio lighting"], ["freckles", "cheekbones"]),
    ("A 25-year-old man with a beard, wearing a grey hoodie, lifting a dumbbell in a gym, full body.",
     ["grey hoodie", "dumbbell", "full body"], ["25-year-old", "beard"]),
    ("A woman sits in a Japanese garden near an old building, looking at the camera.",
     ["Japanese garden", "old building", "looking at the camera"], []),
])
def test_captions_keep_what_changes_and_drop_the_face(raw, kept, gone):
    caption = generated(clean_caption(raw))
    assert caption.startswith(f"{TRIGGER_TOKEN}, ")
    for words in kept:
        assert words in caption, (words, caption)
    for words in gone:
        assert words.lower() not in caption.lower(), (words, caption)


def test_trigger_word_leads_and_noise_leaves_nothing():
    assert generated(clean_caption("mila_v1 walks on a beach, bright sun.", "mila_v1")) == \
        f"{TRIGGER_TOKEN} walks on a beach, bright sun"
    assert clean_caption(":,2U-}-}U-}U-}-") == "" and generated("") == TRIGGER_TOKEN
    assert stored("a woman in red", "mila_v1") == f"{TRIGGER_TOKEN}, a woman in red"  # the word put back first
    assert stored("photo of mila_v1 at the beach", "mila_v1") == f"photo of {TRIGGER_TOKEN} at the beach"
    assert identity_words("mila_v1 with blue eyes, smiling") == ["with blue eyes"]
    assert retrigger("[trigger] on a sofa", "", "mila_v1") == "mila_v1 on a sofa"  # an unsaved edit follows the word
    assert retrigger("mila_v1 by mila_v1x", "mila_v1", "ada_v2") == "ada_v2 by mila_v1x"
    assert retrigger("mila_v1 on a sofa", "mila_v1", "") == "[trigger] on a sofa"


# ---- the captioner job ---------------------------------------------------------------------------
def sheet(studio, image_file, slots=(0, 1, 2)):
    character = studio.characters.create("Mila")
    studio.characters.add_images(character["id"], [image_file])
    studio.wait(studio.sheet.start(character["id"], SheetOptions(slots=slots)).id, 300)
    ids = [i.id for i in studio.characters.images(character["id"], "sheet")]
    studio.selection.set_selection(character["id"], ids)
    return character["id"], ids


def test_sheet_images_keep_prompt_captions_until_the_captioner_is_asked(studio, image_file):
    cid, ids = sheet(studio, image_file)
    rows = studio.captions.rows(cid, "mila_v1")
    assert [r.source for r in rows] == ["sheet prompt"] * len(ids)
    assert all(r.caption.startswith("photo of mila_v1, ") for r in rows)
    edited = studio.captions.edit(cid, ids[0], "a woman in a green coat with blue eyes", "mila_v1")
    assert edited.caption == "mila_v1, a woman in a green coat with blue eyes"  # the user's words, trigger put back
    assert edited.identity == ("with blue eyes",)  # pointed out, not removed

    done = studio.wait(studio.captions.start(cid).id, 300)  # the real generate path, on the tiny Qwen3-VL
    assert done.outputs["noise"] and "noise" in done.message
    rows = studio.captions.rows(cid, "mila_v1")
    assert rows[0].source == "edited" and rows[0].caption.startswith("mila_v1, a woman in a green coat")
    assert done.outputs["captioned"] == len(ids) - 1  # the tiny model writes words of noise, never nothing
    assert all(r.source == "captioner" and r.model == "built in" and r.caption.startswith("mila_v1, ")
               for r in rows[1:])

    studio.captions.reset(cid, [ids[0]])
    assert studio.captions.rows(cid)[0].caption.startswith(f"photo of {TRIGGER_TOKEN}, ")


def test_find_replace_keeps_the_trigger_and_the_dataset_uses_the_captions(studio, image_file):
    cid, ids = sheet(studio, image_file, slots=tuple(range(20)))
    report = studio.captions.replace(cid, "close-up portrait", "headshot", "mila_v1")
    assert report.changed >= 1 and all("mila_v1" in r.caption for r in report.rows)
    with pytest.raises(UserError, match="trigger word"):
        studio.captions.replace(cid, "mila_v1", "someone", "mila_v1")
    with pytest.raises(UserError, match="trigger word"):
        studio.captions.replace(cid, "[trigger]", "x")
    studio.captions.edit(cid, ids[1], "mila_v1 on a red sofa, lamp light", "mila_v1")
    dataset = studio.selection.export_dataset(cid, "mila_v2")  # another trigger: the captions follow it
    folder = studio.store.root / dataset["dir"]
    texts = {p.name: p.read_text() for p in folder.glob("*.txt")}
    assert texts[f"001_{ids[1]}.txt"] == "mila_v2 on a red sofa, lamp light"
    replaced = {r.image_id for r in report.rows if "headshot" in r.caption} - {ids[1]}  # ids[1] edited since
    assert {name[4:-4] for name, t in texts.items() if "headshot" in t} == replaced
    assert all("mila_v2" in t and "[trigger]" not in t for t in texts.values())
    with zipfile.ZipFile(studio.store.root / dataset["zip"]) as archive:
        assert archive.read(f"001_{ids[1]}.txt").decode() == texts[f"001_{ids[1]}.txt"]


def test_refusals_in_words(studio, image_file):
    from lora_studio.jobs import JobQueue
    from lora_studio.services.captions import CaptionService

    cid, ids = sheet(studio, image_file, slots=(0, 1))
    with pytest.raises(UserError, match="not part of this character's sheet"):
        studio.captions.edit(cid, "img_elsewhere", "x")
    with pytest.raises(UserError, match="caption is empty"):
        studio.captions.edit(cid, ids[0], "  ")
    with pytest.raises(UserError, match="characters long"):
        studio.captions.edit(cid, ids[0], "x" * 700)
    with pytest.raises(UserError, match="folders are for the command line"):
        studio.captions.start(cid, model="/etc")
    real = CaptionService(studio.store, JobQueue(studio.store), studio.characters, tiny=False)  # no download
    with pytest.raises(UserError, match="Settings → Models"):
        real.start(cid)


def test_photos_without_captions_get_them_offered(studio, tmp_path):
    from tests.conftest import noise_image

    from lora_studio.services.datasets import dataset_from_folder

    paths = []
    for index in range(3):
        paths.append(tmp_path / f"p{index}.png")
        noise_image(index, 64).save(paths[-1])
    (tmp_path / "p0.txt").write_text("mila_v1 in her own words")
    dataset = dataset_from_folder(studio.store, paths, "mila_v1")
    assert dataset["uncaptioned"] == ["001", "002"]
    studio.wait(studio.captions.start_for_dataset(dataset["id"]).id, 300)
    after = studio.store.get("datasets", dataset["id"])
    folder = studio.store.root / after["dir"]
    assert (folder / "000.txt").read_text() == "mila_v1 in her own words"  # the user's caption is kept
    assert after["uncaptioned"] == [] and after["hash"] != dataset["hash"]
    with zipfile.ZipFile(studio.store.root / after["zip"]) as archive:
        for stem in ("001", "002"):
            assert archive.read(f"{stem}.txt").decode() == (folder / f"{stem}.txt").read_text()
            assert (folder / f"{stem}.txt").read_text().startswith("mila_v1")


# ---- catalogue captioners, downloaded like the base models -------------------------------------
@pytest.fixture(scope="module")
def captioner_folders(tmp_path_factory):
    from lora_studio.engines.caption import save_tiny_captioner

    root = tmp_path_factory.mktemp("captioners")
    return save_tiny_captioner(root / "small", seed=1), save_tiny_captioner(root / "better", seed=2)


def test_catalogue_captioner_downloads_and_the_one_named_runs(studio, image_file, captioner_folders, tmp_path,
                                                              monkeypatch):
    from PIL import Image

    from lora_studio.engines.caption import build_tiny_captioner
    from lora_studio.services.caption_rules import INSTRUCTION

    small, better = captioner_folders
    with FakeHub() as hub:
        hub.add_repo(SMALL, small, files={"README.md": b"# card\n", "demo.png": b"\x89PNG"})
        hub.add_repo(BETTER, better)
        point_client_at(monkeypatch, hub.url, tmp_path / "hf-home")
        studio.models._gpu_bytes = lambda: None
        row = studio.models.describe(SMALL)
        assert row.download_bytes == sum(len(d) for p, d in hub.repos[SMALL].files.items()
                                         if p not in ("README.md", "demo.png"))
        assert row.status == "not downloaded" and "CPU" in row.recommendation
        with pytest.raises(UserError, match="not downloaded yet"):
            studio.captions.start(sheet(studio, image_file, slots=(0,))[0], model=SMALL)
        for repo in (SMALL, BETTER):
            job = studio.jobs.wait(studio.models.start_download(repo).id, 120)
            assert job.status == "succeeded", job.error
        assert (SMALL, "README.md") not in hub.served and (SMALL, "demo.png") not in hub.served
        assert studio.models.describe(SMALL).status == "on disk"

    cid = studio.characters.list()[0]["id"]
    image = studio.characters.images(cid, "sheet")[0]
    results = {}
    for repo, seed in ((SMALL, 1), (BETTER, 2)):
        done = studio.wait(studio.captions.start(cid, model=repo, keep_edited=False).id, 300)
        assert not done.outputs["noise"] and done.outputs["model"] == repo
        results[repo] = studio.captions.rows(cid)[0]
        # the caption is what this repo's weights write, read back from the Hugging Face cache
        direct = build_tiny_captioner(seed).caption([Image.open(image.path).convert("RGB")], INSTRUCTION)[0]
        assert results[repo].caption == generated(clean_caption(direct)) and results[repo].model == repo
    assert results[SMALL].caption != results[BETTER].caption
