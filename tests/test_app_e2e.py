"""The whole journey through the running app's API with gradio_client, on tiny Flux."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from gradio_client import Client, handle_file

from tests.app_server import running_app
from tests.test_images import png_header_only

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("e2e") / "ws") as (studio, url):
        yield studio, Client(url, verbose=False)


def wait_job(client, job_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.predict(job_id, api_name="/job_status")
        if job["done"]:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")



def test_every_step_has_a_named_endpoint(app):
    _, client = app
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ("/create_character", "/add_reference", "/start_sheet", "/job_status", "/quick_select",
                 "/toggle_image", "/export_dataset", "/start_training", "/run_sweep", "/generate",
                 "/list_loras", "/import_lora", "/cancel_job", "/resume_job", "/score_faces"):
        assert name in names


def test_whole_journey(app, astronaut_path, tmp_path):
    studio, client = app
    root = studio.store.root
    character = client.predict("Mila", api_name="/create_character")
    cid = character["id"]

    # Reference: good image in, bad ones refused with a reason, nothing stored for them.
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(Exception, match="not an image|too large"):
        client.predict(cid, [handle_file(str(text_file)), handle_file(str(huge))], api_name="/add_reference")
    added = client.predict(cid, [handle_file(str(astronaut_path)), handle_file(str(text_file))],
                           api_name="/add_reference")
    assert len(added["added"]) == 1 and "not an image" in added["rejected"][0]
    assert len(studio.store.find("images", character_id=cid)) == 1

    # Training on nothing is refused before any work.
    with pytest.raises(Exception, match="Select at least 20"):
        client.predict(cid, "mila_v1", api_name="/export_dataset")

    # Character sheet: 30 images, files and records.
    job = client.predict(cid, True, 3, api_name="/start_sheet")
    job = wait_job(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert any("gate is off" in line for line in job["logs"])
    sheet = studio.store.find("images", character_id=cid, kind="sheet")
    assert len(sheet) == 30
    assert {r["category"] for r in sheet} == {"angle", "expression", "pose", "context"}
    assert all((root / r["path"]).is_file() for r in sheet)

    # Selection: faces were measured as the sheet finished; quick-select 25, toggle one off, export.
    state = client.predict(cid, api_name="/selection")
    assert all(image["score"] and image["score"]["face_found"] is False for image in state["images"])
    state = client.predict(cid, 25, api_name="/quick_select")
    assert state["count"] == 25
    state = client.predict(cid, state["selected"][0], api_name="/toggle_image")
    assert state["count"] == 24
    with pytest.raises(Exception, match="trigger"):
        client.predict(cid, "a b", api_name="/export_dataset")
    dataset = client.predict(cid, "mila_v1", api_name="/export_dataset")
    folder = root / dataset["dir"]
    assert len(list(folder.glob("*.png"))) == 24 and len(list(folder.glob("*.txt"))) == 24
    assert all("mila_v1" in p.read_text() for p in folder.glob("*.txt"))
    assert (root / dataset["zip"]).is_file()

    # Training: a short run, logs and loss stream, LoRA registered with its files.
    with pytest.raises(Exception, match="Steps|steps"):
        client.predict(dataset["id"], "bad", "", "Beginner", -5, 0, 0, 0, "auto", api_name="/start_training")
    job = client.predict(dataset["id"], "mila", "", "Beginner", 8, 4, 1e-3, 0, "auto", api_name="/start_training")
    job = wait_job(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["loss"]
    loras = client.predict(api_name="/list_loras")
    assert [l["name"] for l in loras] == ["mila"]
    assert (root / loras[0]["relative_path"]).is_file()
    files = loras[0]["files"]
    assert {"lora", "kohya", "metadata", "card"} <= set(files) and files["samples"]
    assert all((root / p).is_file() for p in files["samples"])

    # Strength tester: bad strengths refused; a sweep gives a grid and a recommendation.
    for bad in ("abc", "-5"):
        with pytest.raises(Exception, match="not a number|out of range"):
            client.predict("mila", "photo of mila_v1", bad, "1", "", api_name="/run_sweep")
    job = client.predict("mila", "photo of mila_v1 in a café", "0, 0.6, 1.2", "1, 2", "", api_name="/run_sweep")
    job = wait_job(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert (root / job["outputs"]["grid"]).is_file()  # replies carry workspace-relative paths
    assert job["outputs"]["analysis"]["reason"]

    # Generate with the LoRA.
    job = wait_job(client, client.predict("photo of mila_v1", "mila:0.8", 5, "", api_name="/generate")["id"])
    assert job["status"] == "succeeded" and (root / job["outputs"]["image"]).is_file()
    jobs = client.predict("", api_name="/list_jobs")
    assert {j["kind"] for j in jobs} >= {"sheet", "train", "sweep", "generate"}


def test_only_workspace_files_are_served(app):
    _, client = app
    base = client.src.rstrip("/")
    for path in ("/file=/etc/passwd", "/gradio_api/file=/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=10)
        assert info.value.code in (403, 404)


def test_auth_protects_the_app_and_its_api(tmp_path):
    with running_app(tmp_path / "ws", auth=("mila", "s3cret")) as (_, url):
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(api_name="/list_characters")
        client = Client(url, auth=("mila", "s3cret"), verbose=False)
        assert client.predict(api_name="/list_characters") == []


def test_import_and_export_a_lora_through_the_api(app, tmp_path):
    import zipfile

    from tests.lora_factory import make_tiny_lora

    _, client = app
    lora = make_tiny_lora(tmp_path / "style.safetensors", seed=3)
    record = client.predict(handle_file(str(lora)), "film style", "", api_name="/import_lora")
    assert record["metadata"]["format"] == "diffusers"
    with zipfile.ZipFile(client.predict(record["id"], api_name="/export_lora")) as archive:
        assert "lora.safetensors" in archive.namelist()
    client.predict(record["id"], api_name="/delete_lora")
