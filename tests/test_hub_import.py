"""Community LoRAs imported by hub id, through the same downloads, at their author's strength."""
from __future__ import annotations

import pytest

from lora_studio.jobs import UserError
from lora_studio.services.hub_import import parse_reference
from tests.fake_hub import FakeHub, point_client_at

CARD = b"---\ninstance_prompt: filmic_x\nlicense: mit\n---\n# A film look\n"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from lora_studio.engines.builtin.tiny import build_tiny_flux
    from tests.lora_factory import TARGETS, make_lora

    strong = make_lora(build_tiny_flux().transformer, tmp_path / "a" / "film.safetensors", TARGETS, seed=4,
                       rank=4, alpha=8)
    other = make_lora(build_tiny_flux().transformer, tmp_path / "b" / "other.safetensors", TARGETS, seed=5)
    with FakeHub() as fake:
        fake.add_repo("someone/film-style", files={"film.safetensors": strong.read_bytes(), "README.md": CARD,
                                                   "sample.png": b"\x89PNG not fetched"})
        fake.add_repo("someone/two-files", files={"v1/a.safetensors": strong.read_bytes(),
                                                  "v2/b.safetensors": other.read_bytes()})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def test_references_in_words():
    assert parse_reference("someone/film-style") == ("someone/film-style", None)
    assert parse_reference("someone/two-files/v2/b.safetensors") == ("someone/two-files", "v2/b.safetensors")
    assert parse_reference("https://huggingface.co/someone/two-files/blob/main/v1/a.safetensors") == \
        ("someone/two-files", "v1/a.safetensors")
    for bad in ("nothing", "a/b/../c.safetensors", "a/b/model.ckpt", ""):
        with pytest.raises(UserError):
            parse_reference(bad)


def test_import_by_hub_id_reads_the_authors_strength_and_trigger(hub, studio):
    job = studio.hub_imports.start("someone/film-style")
    done = studio.wait(job.id, 120)
    record = studio.library.get(done.outputs["lora_id"])
    assert record["name"] == "film" and record["trigger"] == "filmic_x"  # the card's instance_prompt
    assert record["metadata"]["scale"]["text"].startswith("alpha 8 / rank 4 → ×2 folded")
    assert record["metadata"]["hub"]["repo_id"] == "someone/film-style"
    assert ("someone/film-style", "sample.png") not in hub.served  # only the LoRA and its card
    assert hub.served[("someone/film-style", "film.safetensors")] == len(hub.repos["someone/film-style"]
                                                                         .files["film.safetensors"])
    with pytest.raises(UserError, match="already exists"):
        studio.hub_imports.start("someone/film-style", name="film")


def test_a_repo_with_several_files_asks_for_one(hub, studio):
    with pytest.raises(UserError, match="name one as someone/two-files/FILE.safetensors"):
        studio.hub_imports.start("someone/two-files")
    with pytest.raises(UserError, match="has no file"):
        studio.hub_imports.start("someone/two-files/v3/c.safetensors")
    with pytest.raises(UserError, match="No model someone/missing"):
        studio.hub_imports.start("someone/missing")
    done = studio.wait(studio.hub_imports.start("someone/two-files/v2/b.safetensors", "other", "mark_y").id, 120)
    record = studio.library.get(done.outputs["lora_id"])
    assert record["trigger"] == "mark_y" and record["metadata"]["hub"]["path"] == "v2/b.safetensors"


def test_cli_imports_a_hub_lora(hub, tmp_path, capsys):
    import json

    from lora_studio.cli import main

    code = main(["import-lora", "someone/two-files/v1/a.safetensors", "--name", "film-a", "--trigger", "film_a",
                 "--workspace", str(tmp_path / "ws"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["lora"]["name"] == "film-a" and out["lora"]["trigger"] == "film_a"
    assert out["lora"]["metadata"]["hub"] == {"repo_id": "someone/two-files", "path": "v1/a.safetensors",
                                              "commit": hub.repos["someone/two-files"].sha}
    code = main(["import-lora", "someone/two-files", "--workspace", str(tmp_path / "ws"), "--json"])
    assert code == 1 and "name one as someone/two-files/FILE.safetensors" in json.loads(capsys.readouterr().out)["error"]
