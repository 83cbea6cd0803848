"""Publishing a LoRA to a (fake) Hub with the real huggingface_hub client: the token's write access first,
a private repo, both files, a card read back with `ModelCard`, bytes counted, and a cut publish repeated."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest

from lora_studio.cli import main
from tests.conftest import noise_image
from tests.fake_hub import FakeHub, point_client_at

REPO = "ada/mila-lora"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as fake:
        fake.add_token("hf_write", "ada", role="write")
        fake.add_token("hf_read", "ada", role="read")
        fake.add_fine_grained_token("hf_fine_other", "ada", {"someone-else": ["repo.write"]})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def cli(capsys, *args) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def quiet_cli(*args) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args, "--json"])
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A LoRA trained on tiny by the CLI from photos, two of them without captions (--caption writes them),
    and a strength test of it: one workspace for the module's tests (each has its own hub)."""
    root = tmp_path_factory.mktemp("publish")
    folder = root / "photos"
    folder.mkdir()
    for i in range(4):
        noise_image(i, 64).save(folder / f"{i}.png")
    for i in (0, 1):
        (folder / f"{i}.txt").write_text(f"photo of mila_v1, pose {i}")
    ws = ["--workspace", str(root / "ws")]
    code, out = quiet_cli("train", str(folder), "--trigger", "mila_v1", "--name", "mila", "--steps", "4",
                          "--rank", "4", "--caption", *ws)
    assert code == 0, out
    dataset = next((root / "ws" / "datasets").glob("ds_*/"))
    texts = {p.name: p.read_text() for p in dataset.glob("*.txt")}
    assert texts["000.txt"] == "photo of mila_v1, pose 0"  # the photographer's own caption stays
    assert texts["002.txt"].startswith("mila_v1, ") and texts["003.txt"].startswith("mila_v1, ")
    code, out = quiet_cli("strengths", "--lora", "mila", "--prompt", "photo of mila_v1 in a café",
                          "--strengths", "0.8,1", "--seed", "1", "--seed", "2", *ws)
    assert code == 0, out
    return root / "ws"


@pytest.fixture
def trained(workspace):
    return ["--workspace", str(workspace)]


def test_a_read_token_is_refused_before_any_byte(hub, trained, capsys, monkeypatch):
    for token, words in (("hf_read", "can only read"), ("hf_fine_other", "fine-grained")):
        monkeypatch.setenv("HF_TOKEN", token)
        code, out = cli(capsys, "publish", "mila", REPO, *trained)
        assert code == 1 and words in out["error"] and "settings/tokens" in out["error"]
    monkeypatch.setenv("HF_TOKEN", "hf_write")
    code, out = cli(capsys, "publish", "mila", "bob/elsewhere", *trained)
    assert code == 1 and "cannot publish under 'bob'" in out["error"]
    assert hub.uploads == [] and REPO not in hub.repos  # refused before the repo, before any byte


def test_publish_reads_back_as_a_hub_card_and_again_makes_a_commit(hub, trained, capsys, monkeypatch, workspace):
    from huggingface_hub import HfApi, ModelCard, errors

    monkeypatch.setenv("HF_TOKEN", "hf_write")
    code, out = cli(capsys, "publish", "mila", REPO, *trained)
    assert code == 0, out
    repo = hub.repos[REPO]
    assert repo.private and len(repo.history) == 1
    lora_dir = next((workspace / "loras").glob("lora_*/"))
    sizes = {"lora.safetensors": (lora_dir / "lora.safetensors").read_bytes(),
             "lora_kohya.safetensors": (lora_dir / "lora_kohya.safetensors").read_bytes()}
    for name, data in sizes.items():
        assert repo.files[name] == data
    assert out["bytes_done"] == out["bytes_total"] == sum(len(d) for d in repo.files.values())

    # the client's own requests, in the order it sent them (plain LFS: no Xet)
    steps = [(u["method"], u["path"].split("/")[-1] if "lfs-" in u["path"] else u["path"]) for u in hub.uploads]
    assert steps[:4] == [("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                         ("POST", f"/api/models/{REPO}/preupload/main"), ("POST", f"/{REPO}.git/info/lfs/objects/batch")]
    assert steps[-1] == ("POST", f"/api/models/{REPO}/commit/main")
    assert hub.uploads[0]["json"]["visibility"] == "private"

    card = ModelCard.load(REPO, token="hf_write")
    data = card.data.to_dict()
    assert data["base_model"] == "black-forest-labs/FLUX.1-dev" and data["instance_prompt"] == "mila_v1"
    assert data["license"] == "other" and data["license_name"] == "flux-1-dev-non-commercial-license"
    assert {"lora", "diffusers", "template:sd-lora", "flux"} <= set(data["tags"])
    widget = [w["output"]["url"] for w in data["widget"]]
    assert len(widget) == 2 and all(url in repo.files for url in widget)  # two seeds at the shown strength
    assert all(w["text"] == "photo of mila_v1 in a café" for w in data["widget"])
    assert "| ComfyUI | `lora_kohya.safetensors`" in card.text and "## The face at each strength" in card.text
    assert "| 0.8" in card.text and "| 1" in card.text
    with pytest.raises(errors.RepositoryNotFoundError):
        HfApi(endpoint=hub.url).model_info(REPO, token=False)  # private: nobody else sees it

    put = len([u for u in hub.uploads if u["method"] == "PUT"])
    code, out = cli(capsys, "publish", "mila", REPO, *trained)  # nothing changed: no new commit, nothing re-sent
    assert code == 0 and len(repo.history) == 1 and len([u for u in hub.uploads if u["method"] == "PUT"]) == put
    code, _ = cli(capsys, "strengths", "--lora", "mila", "--prompt", "photo of mila_v1 on a beach",
                  "--strengths", "1", "--seed", "3", *trained)
    code, out = cli(capsys, "publish", "mila", REPO, *trained)
    assert code == 0 and len(repo.history) == 2 and out["commit"] == repo.sha
    assert "on a beach" in repo.files["README.md"].decode()


def test_a_publish_cut_halfway_is_repeated_without_sending_twice(hub, trained, capsys, monkeypatch, workspace):
    monkeypatch.setenv("HF_TOKEN", "hf_write")
    lora_dir = next((workspace / "loras").glob("lora_*/"))
    kohya = hashlib.sha256((lora_dir / "lora_kohya.safetensors").read_bytes()).hexdigest()
    main_file = hashlib.sha256((lora_dir / "lora.safetensors").read_bytes()).hexdigest()
    hub.fail_upload(kohya, 400)
    code, out = cli(capsys, "publish", "mila", REPO, *trained)
    assert code == 1 and "again" in out["error"], out
    assert hub.repos[REPO].history == []  # no commit: the repo holds nothing half-made
    code, out = cli(capsys, "publish", "mila", REPO, *trained)
    assert code == 0, out
    puts = [u["path"].rsplit("/", 1)[1] for u in hub.uploads if u["method"] == "PUT"]
    assert puts.count(main_file) == 1 and puts.count(kohya) == 2  # the finished file went up once
    assert len(hub.repos[REPO].history) == 1


def test_publish_refusals_through_the_service(hub, studio, tmp_path, monkeypatch):
    from lora_studio.jobs import UserError
    from tests.lora_factory import make_tiny_lora

    monkeypatch.setenv("HF_TOKEN", "hf_write")
    record = studio.library.import_file(make_tiny_lora(tmp_path / "style.safetensors", seed=3), "style")
    with pytest.raises(UserError, match="not a Hugging Face repo id"):
        studio.publish.start("style", "no-slash")
    with pytest.raises(UserError, match="No LoRA named"):
        studio.publish.start("nothing", REPO)
    card = studio.publish.card("style", REPO)
    assert "No strength test has run yet" in card and "instance_prompt" not in card
    done = studio.wait(studio.publish.start(record["id"], REPO, public=True).id, 120)
    assert done.outputs["url"].endswith(REPO) and not hub.repos[REPO].private
    assert studio.library.get(record["id"])["published"]["repo_id"] == REPO
    assert Path(studio.library.path(record)).read_bytes() == hub.repos[REPO].files["lora.safetensors"]


def test_the_card_licence_comes_from_the_checkpoint_rows():
    """One table of licences: each checkpoint the families know, as its own Hub card writes it; the Hub is
    asked only about bases the app does not know."""
    from lora_studio.engines import family
    from lora_studio.services.publish_card import base_licence, family_tag

    asked = []
    for row in family.CHECKPOINTS:
        licence, name, link = base_licence(row.repo_id, asked.append)
        assert (licence == "apache-2.0") == (row.licence == family.APACHE)
        assert link is None if licence == "apache-2.0" else link.startswith(f"https://huggingface.co/{row.repo_id}/")
        assert family_tag(row.repo_id) == ("flux2" if row.family == family.KLEIN.key else "flux")
    assert asked == []
    assert base_licence(family.KLEIN_9B, asked.append)[1] == "flux-non-commercial-license"
    assert base_licence("someone/merge", lambda repo: ("mit", None, None)) == ("mit", None, None)
    assert base_licence("someone/merge", lambda repo: None)[0] == "other"
