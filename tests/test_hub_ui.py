"""Captions and the Hub through the running app: gradio_client and the page's own events edit captions
(the trigger word kept), run the tiny captioner, download a catalogue captioner and caption with it,
publish to the fake hub (the card read back with huggingface_hub.ModelCard) and import from it; on a
shared link a stranger reaches none of the Hub's endpoints or events, by name or by index."""
from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from lora_studio.engines import family
from tests.app_server import running_app
from tests.test_app_e2e import wait_job
from tests.fake_hub import FakeHub, point_client_at
from tests.hostile_kit import Browser, character_with_sheet, refused, unchanged

REPO, WRITE = "ada/mila-lora", "hf_write_0123456789"
SMALL = "Qwen/Qwen3-VL-2B-Instruct"
HUB_NAMED = {"publish_lora": ["mila", REPO, False], "publish_status": ["abc123"], "publish_card": ["mila", REPO],
             "import_hub_lora": ["someone/film-style", "", ""]}
HUB_EVENTS = ("hub_import_begin", "hub_import_tick", "publish_begin", "publish_tick", "publish_preview",
              "hub_imported")

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from lora_studio.engines.builtin.tiny import build_tiny_flux
    from tests.lora_factory import TARGETS, make_lora

    film = make_lora(build_tiny_flux().transformer, tmp_path / "film" / "film.safetensors", TARGETS, seed=4, rank=4,
                     alpha=8)
    with FakeHub() as fake:
        fake.add_token(WRITE, "ada", role="write")
        fake.add_repo("someone/film-style", files={"film.safetensors": film.read_bytes(),
                                                   "README.md": b"---\ninstance_prompt: filmic_x\n---\n# Film\n"})
        fake.add_repo("someone/flux-finetune", files={"README.md": b"---\nlicense: mit\n---\n# A fine-tune\n"})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        monkeypatch.setenv("HF_TOKEN", WRITE)
        yield fake


def selected_sheet(workspace, astronaut_path, count: int = 3) -> tuple[str, list[str]]:
    """A character with a sheet and `count` images selected, made before the app starts (as after a
    restart): the page's character picker lists it, so its events accept the character's id."""
    from lora_studio.config import Settings
    from lora_studio.studio import Studio

    with Studio(Settings(workspace=workspace), start=False) as studio:
        cid, ids = character_with_sheet(studio, "Mila", astronaut_path)
        studio.selection.set_selection(cid, ids[:count])
    return cid, ids[:count]


def test_captions_are_edited_replaced_and_written_through_the_app(tmp_path, astronaut_path):
    cid, ids = selected_sheet(tmp_path / "ws", astronaut_path)
    with running_app(tmp_path / "ws") as (studio, url):
        client, page = Client(url, verbose=False), Browser(url)
        rows = client.predict(cid, "mila_v1", api_name="/caption_rows")
        assert [r["image_id"] for r in rows] == ids and all(r["source"] == "sheet prompt" for r in rows)
        assert all(r["caption"].startswith("photo of mila_v1, ") for r in rows)

        # The page's own events, by index: the panel fills its picker, then a caption that lost the trigger
        # word is saved, and the word comes back first.
        assert page.outputs("captions_show", cid, "mila_v1", None, "", None)[1]["value"] == ids[0]
        table, pick, text, message = page.outputs("captions_save", cid, ids[1], "a woman with blue eyes on a sofa",
                                                  "mila_v1")
        assert text == "mila_v1, a woman with blue eyes on a sofa" and "with blue eyes" in message
        assert table["data"][1][2] == text and table["data"][1][3] == "edited" and pick["value"] == ids[1]
        edited = client.predict(cid, ids[2], "mila_v1 in a red coat, lamp light", "mila_v1", api_name="/edit_caption")
        assert edited["caption"] == "mila_v1 in a red coat, lamp light" and edited["identity"] == []

        report = client.predict(cid, "red coat", "green jacket", "mila_v1", api_name="/replace_captions")
        assert report["changed"] == 1 and report["rows"][2]["caption"] == "mila_v1 in a green jacket, lamp light"
        refused(client, "trigger word stays", cid, "mila_v1", "someone", "mila_v1", api_name="/replace_captions")
        assert "trigger word stays" in page.refusal("captions_replace", cid, "[trigger]", "x", "", ids[0])
        shown = page.outputs("captions_show", cid, "", ids[2], "mila_v1 in a green jacket, unsaved", None)
        assert shown[0]["data"][2][2] == "[trigger] in a green jacket, lamp light"  # no word: the placeholder
        assert shown[2] == "[trigger] in a green jacket, unsaved"  # the words being edited stay, the word follows
        table, pick, text, _, _ = page.outputs("captions_show", cid, "", ids[2], "x", None)  # the same word again
        assert table == pick == text == {"__type__": "update"}  # nothing sent: the box keeps what is typed

        # "Caption these images" on the tiny engine: its own random captioner, and the page says the words are noise.
        _, progress, poll, note, _ = page.outputs("captions_start", cid, "", True)  # the job id stays in the server's State
        assert poll["active"] and "Captions · 3 images · built in" in progress and "noise" in note["value"]
        for _ in range(600):  # the page's timer: the job's id is the session's own (a gr.State)
            table, pick, text, message, progress, poll = page.outputs("captions_tick", cid, None, "mila_v1", ids[0])
            if poll.get("active") is False:  # while it runs, the timer is left as it is
                break
            time.sleep(0.2)
        assert "succeeded" in progress and "noise" in progress
        assert [row[3] for row in table["data"]] == ["captioner (built in)", "edited", "edited"]  # edits kept
        rows = client.predict(cid, "mila_v1", api_name="/caption_rows")
        assert rows[0]["caption"].startswith("mila_v1") and rows[0]["caption"] == table["data"][0][2] == text
        assert [j.outputs["noise"] for j in studio.jobs.list("caption")] == [True]

        page.close()


def test_a_downloaded_catalogue_captioner_captions_the_set(tmp_path, monkeypatch, astronaut_path):
    from lora_studio.engines.caption import save_tiny_captioner

    folder = save_tiny_captioner(tmp_path / "small", seed=1)
    with FakeHub() as fake:
        fake.add_repo(SMALL, folder)
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        cid, ids = selected_sheet(tmp_path / "ws", astronaut_path, 2)
        with running_app(tmp_path / "ws") as (studio, url):
            studio.models._gpu_bytes = lambda: None
            client = Client(url, verbose=False)
            rows = {r["repo_id"]: r for r in client.predict(False, api_name="/list_models")}
            assert rows[SMALL]["status"] == "not downloaded" and "Caption" in rows[SMALL]["recommendation"]
            refused(client, "not downloaded yet", cid, SMALL, True, api_name="/start_captioning")
            started = client.predict(SMALL, api_name="/start_download")
            assert wait_job(client, started["job_id"])["status"] == "succeeded"
            assert client.predict(SMALL, api_name="/describe_model")["status"] == "on disk"
            job = client.predict(cid, SMALL, True, api_name="/start_captioning")
            done = wait_job(client, job["job_id"])
            assert done["status"] == "succeeded" and not done["outputs"]["noise"] and done["outputs"]["captioned"] == 2
            assert all(r["model"] == SMALL for r in client.predict(cid, "", api_name="/caption_rows"))


def test_publish_and_import_through_the_app(hub, tmp_path):
    from huggingface_hub import ModelCard

    from tests.lora_factory import make_tiny_lora

    with running_app(tmp_path / "ws") as (studio, url):
        record = studio.library.import_file(make_tiny_lora(tmp_path / "mila.safetensors", seed=2), "mila", "mila_v1")
        meta = dict(record["metadata"], base_model=family.KLEIN_BASE_4B, trigger="mila_v1")
        studio.store.update("loras", record["id"], metadata=meta)
        client = Client(url, verbose=False)
        card = client.predict("mila", REPO, api_name="/publish_card")
        assert "license: apache-2.0" in card and "flux2" in card  # Klein base 4B's row in engines/family
        started = client.predict("mila", REPO, False, api_name="/publish_lora")
        while (report := client.predict(started["job_id"], api_name="/publish_status"))["status"] not in (
                "succeeded", "failed"):
            time.sleep(0.1)
        assert report["status"] == "succeeded", report["message"]
        assert report["bytes_done"] == report["bytes_total"] > 0 and report["url"].endswith(REPO)
        assert hub.repos[REPO].private and "lora.safetensors" in hub.repos[REPO].files
        data = ModelCard.load(REPO, token=WRITE).data.to_dict()
        assert data["base_model"] == family.KLEIN_BASE_4B and data["license"] == "apache-2.0"
        assert data["instance_prompt"] == "mila_v1" and {"lora", "template:sd-lora", "flux2"} <= set(data["tags"])

        # A base this app does not know: its own card's licence, asked of the Hub.
        studio.store.update("loras", record["id"], metadata=dict(meta, base_model="someone/flux-finetune"))
        assert "license: mit" in client.predict("mila", REPO, api_name="/publish_card")

        job = client.predict("someone/film-style", "", "", api_name="/import_hub_lora")
        done = wait_job(client, job["job_id"], 120)
        assert done["status"] == "succeeded", done["error"]
        imported = studio.library.get(done["outputs"]["lora_id"])
        assert imported["trigger"] == "filmic_x" and imported["metadata"]["hub"]["repo_id"] == "someone/film-style"


def test_a_stranger_reaches_no_hub_endpoint_or_event(hub, tmp_path, astronaut_path):
    from tests.lora_factory import make_tiny_lora

    from lora_studio.config import Settings
    from lora_studio.studio import Studio

    cid, ids = selected_sheet(tmp_path / "ws", astronaut_path, 2)
    with Studio(Settings(workspace=tmp_path / "ws"), start=False) as before:  # listed by the page's LoRA picker
        lora_id = before.library.import_file(make_tiny_lora(tmp_path / "mila.safetensors", seed=2), "mila")["id"]
    with running_app(tmp_path / "ws", host="0.0.0.0") as (studio, url):  # not a private launch
        client, page = Client(url, verbose=False), Browser(url)
        config = httpx.get(url + "config").json()
        events = {d["api_name"]: d for d in config["dependencies"]}
        kinds = {c["id"]: c["type"] for c in config["components"]}
        value = {"dropdown": lora_id, "checkbox": True, "textbox": REPO, "state": None}  # what the page would send
        with unchanged(studio.store.root):
            for name, args in HUB_NAMED.items():
                refused(client, "Only the owner", *args, api_name=f"/{name}")
            for name in HUB_EVENTS:
                assert events[name]["api_visibility"] == "private"
                data = [value[kinds[i]] for i in events[name]["inputs"]]
                assert "Only the owner" in page.refusal(name, *data), name
            # Captions are the shared workspace's, like the selection: open to a visitor, every value bounded.
            refused(client, "characters long", cid, ids[0], "x" * 5000, "", api_name="/edit_caption")
            refused(client, "not part of this character's sheet", cid, "img_elsewhere", "x", "",
                    api_name="/edit_caption")
            page.outputs("captions_show", cid, "mila_v1", None, "", None)  # the visitor's page lists the selected images
            assert "characters" in page.refusal("captions_save", cid, ids[0], "y" * 5000, "")
        assert hub.uploads == [] and REPO not in hub.repos
        assert [j for j in studio.jobs.list() if j.kind in ("publish", "lora_download")] == []
        asked = [r for r in hub.requests if not r[1].startswith("/api/telemetry/")]
        assert asked == []  # nothing reached the Hub on a stranger's behalf
        page.close()
