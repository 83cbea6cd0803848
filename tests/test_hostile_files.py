"""Files and a stranger (issue 10, findings 5 and 8, and what already held): raw HTTP against the
running app. The database, logs, datasets and LoRA files are never served; replies hold no absolute
path; downloads leave only when asked for; uploads do not pile up; traversal, symlinks and a
missing login get nothing.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.app_server import running_app
from tests.hostile_kit import dataset_for, raw_call, refused, unchanged, upload_folder
from tests.lora_factory import make_tiny_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, astronaut_path):
    tmp = tmp_path_factory.mktemp("files")
    with running_app(tmp / "ws") as (studio, url):
        client = Client(url, verbose=False)
        dataset = dataset_for(studio, "Mila", astronaut_path)
        lora = studio.library.import_file(make_tiny_lora(tmp / "style.safetensors"), "style")
        job = client.predict("photo", "style:0.8", 1, "", api_name="/generate")
        assert studio.jobs.wait(job["id"], 300).status == "succeeded"
        studio.library.export(lora["id"])
        yield studio, url, client, dict(dataset=dataset, lora=lora, job=job)


def fetch(url: str, path: str | Path) -> int:
    return httpx.get(f"{url}gradio_api/file={path}", timeout=30).status_code


def test_the_database_logs_datasets_and_lora_files_are_never_served(app):
    studio, url, _, made = app
    root = studio.store.root
    private = [root / "studio.json", root / "jobs" / made["job"]["id"] / "log.txt",
               root / made["dataset"]["zip"], root / made["dataset"]["dir"] / "000_{}.png".format(
                   made["dataset"]["image_ids"][0]),
               root / made["lora"]["path"], root / "exports" / f"{made['lora']['id']}.zip"]
    for path in private:
        assert path.is_file(), path
        assert fetch(url, path) in (403, 404), path
    # …while the images the UI shows still are.
    reference = studio.characters.images(made["dataset"]["character_id"], "reference")[0].path
    image = studio.jobs.get(made["job"]["id"]).outputs["image"]
    assert image.startswith("public/")
    for path in (reference, root / image):
        assert fetch(url, path) == 200, path


def test_traversal_and_symlinks_get_nothing(app):
    studio, url, _, made = app
    root = studio.store.root
    served = root / "characters" / made["dataset"]["character_id"]
    (served / "link.json").symlink_to(root / "studio.json")
    (served / "passwd").symlink_to("/etc/passwd")
    try:
        for path in (f"{served}/../../studio.json", f"{served}/link.json", f"{served}/passwd",
                     f"{served}/%2e%2e/%2e%2e/studio.json", "/etc/passwd", "../../../../etc/passwd",
                     "lora_studio/store.py", f"{root}/public/../studio.json"):
            assert fetch(url, path) in (403, 404), path
    finally:
        (served / "link.json").unlink()
        (served / "passwd").unlink()
    assert httpx.get(f"{url}file=/etc/passwd").status_code in (403, 404)


def no_absolute_paths(value, root: str) -> None:
    text = json.dumps(value)
    assert root not in text
    strings = []

    def walk(v):
        if isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, list):
            [walk(x) for x in v]
        elif isinstance(v, str):
            strings.append(v)

    walk(value)
    assert not [s for s in strings if s.startswith("/") or s[1:3] == ":\\"], strings


def test_replies_carry_workspace_relative_paths_only(app):
    studio, _, client, made = app
    cid = made["dataset"]["character_id"]
    root = str(studio.store.root)
    for args, name in (((), "/list_characters"), ((cid, "reference"), "/character_images"),
                       ((cid, "sheet"), "/character_images"), (("",), "/list_jobs"),
                       ((made["job"]["id"],), "/job_status"), ((), "/list_loras"), ((cid,), "/selection")):
        no_absolute_paths(client.predict(*args, api_name=name), root)
    images = client.predict(cid, "reference", api_name="/character_images")
    assert (studio.store.root / images[0]["image_path"]).is_file()


def test_downloads_leave_only_when_asked_for(app):
    _, _, client, made = app
    with zipfile.ZipFile(client.predict(made["lora"]["id"], api_name="/export_lora")) as archive:
        assert "lora.safetensors" in archive.namelist()
    with zipfile.ZipFile(client.predict(made["dataset"]["id"], api_name="/download_dataset")) as archive:
        assert len([n for n in archive.namelist() if n.endswith(".png")]) == 20
    refused(client, "not a valid dataset id", "../studio", api_name="/download_dataset")
    refused(client, "not in the library", "lora_nope", api_name="/export_lora")


def upload(url: str, files: dict[str, bytes]) -> list[str]:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    reply = httpx.post(f"{url}gradio_api/upload", files=parts, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, "PNG")
    return buffer.getvalue()


def test_uploads_are_removed_once_read_kept_or_refused(app, astronaut_path):
    studio, url, client, made = app
    cid = made["dataset"]["character_id"]
    paths = upload(url, {"good.png": astronaut_path.read_bytes(), "bad.png": b"not an image",
                         "big.png": b"\x89PNG" + os.urandom(51 * 1024 * 1024)})
    assert all(Path(p).is_file() and upload_folder() in Path(p).resolve().parents for p in paths)
    kind, reply = raw_call(url, "add_reference", [cid, [file_data(p) for p in paths]])
    assert kind == "complete", reply
    added, rejected = reply[0]["added"], reply[0]["rejected"]
    assert len(added) == 1 and "not an image" in rejected[0] and "larger than 50 MB" in rejected[1]
    assert not any(Path(p).exists() for p in paths)


def test_too_many_files_in_one_call_are_refused_and_removed(app):
    studio, url, _, made = app
    cid = made["dataset"]["character_id"]
    paths = upload(url, {f"{i}.png": png(40 + i, 40) for i in range(21)})
    with unchanged(studio.store.root):
        kind, message = raw_call(url, "add_reference", [cid, [file_data(p) for p in paths]])
    assert kind == "error" and "21 images sent; upload at most 20" in message
    assert not any(Path(p).exists() for p in paths)


def test_a_40_megapixel_reference_is_kept_small_enough_to_score(app, tmp_path):
    studio, _, client, made = app
    cid = made["dataset"]["character_id"]
    big = tmp_path / "big.png"
    big.write_bytes(png(7200, 5500))  # 39.6 MP, a few hundred KB
    added = client.predict(cid, [handle_file(str(big))], api_name="/add_reference")["added"]
    record = studio.store.get("images", added[0])
    assert max(record["width"], record["height"]) == 2048
    assert max(Image.open(studio.store.path(record["path"])).size) == 2048


def test_the_server_itself_refuses_uploads_larger_than_a_lora(app):
    from lora_studio.services.library import MAX_IMPORT_BYTES
    from lora_studio.ui.app import launch_kwargs

    studio = app[0]
    kwargs = launch_kwargs(studio)
    assert kwargs["max_file_size"] == MAX_IMPORT_BYTES <= 1024**3
    assert str(studio.store.root / "studio.json") in kwargs["blocked_paths"]
    assert str(studio.store.root) not in kwargs["allowed_paths"]


def test_login_closes_every_route(tmp_path):
    with running_app(tmp_path / "ws", auth=("mila", "s3cret")) as (studio, url):
        asset = Path(__file__).resolve().parents[1] / "assets" / "samples" / "astronaut.png"
        with httpx.Client(base_url=url, timeout=30) as http:
            for method, path in (("get", "config"), ("get", "gradio_api/info"), ("get", f"gradio_api/file={asset}"),
                                 ("get", f"gradio_api/file={studio.store.root / 'studio.json'}"),
                                 ("post", "gradio_api/call/list_characters"), ("post", "gradio_api/upload"),
                                 ("post", "gradio_api/queue/join")):
                reply = getattr(http, method)(path, **({"json": {"data": []}} if method == "post" else {}))
                assert reply.status_code in (401, 403), (path, reply.status_code)
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(api_name="/list_characters")
        assert Client(url, auth=("mila", "s3cret"), verbose=False).predict(api_name="/list_characters") == []


def test_names_are_escaped_where_the_ui_renders_html():
    from lora_studio.jobs import JobView
    from lora_studio.ui.common import progress_html

    evil = "<img src=x onerror=alert(1)>"
    job = JobView(id="j", kind="sheet", title=f"Character sheet · {evil}", status="failed", progress=0.5,
                  message="", error=evil, logs=[], outputs={}, params={}, created=0, started=None, finished=None)
    html = progress_html(job)
    assert "<img" not in html and "&lt;img" in html
