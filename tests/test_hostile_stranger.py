"""A stranger on the shared link, round three (issue 26): a page elsewhere rebinding its name to a private
launch, the generic job endpoints in each launch mode, and server paths in what every visitor reads.
Everything goes through the real server, by name (gradio_client, raw HTTP) and by event index."""
from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client import Client

from lora_studio.job_access import ANONYMOUS, OWNER, Requester, may_see
from tests.app_server import running_app
from tests.hostile_kit import Browser, refused, unchanged

OWNER_LOGIN = ("owner", "s3cret-pw")
SECRET = "zq-owner-only"  # in the owner's jobs' titles and parameters


# ---- 2: DNS rebinding against a private launch ----------------------------------------------------
def test_a_private_launch_answers_only_its_own_loopback_address(tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):
        port = urlsplit(url).port
        rebound = {"Host": f"rebind.example:{port}", "Origin": f"http://rebind.example:{port}"}
        body = {"data": ["local", "test/evil-model", "", ""]}
        with unchanged(studio.store.root):
            for headers in (rebound, {"Host": f"rebind.example:{port}"},  # a GET from the rebound page: no Origin
                            {"Origin": "http://evil.example"}, {"Origin": "null"},
                            {"Origin": f"http://localhost:{port + 1}"}):  # another local site
                for method, path in (("GET", "config"), ("GET", ""), ("POST", "gradio_api/call/setup_engine"),
                                     ("GET", "gradio_api/info")):
                    answer = httpx.request(method, url + path, headers=headers, json=body, timeout=60)
                    assert answer.status_code == 403, (headers, path, answer.status_code)
                    assert "only pages opened on this computer" in answer.text
                    assert "dependencies" not in answer.text
        assert not (studio.store.root / "setup.json").exists() and studio.settings.engine == "tiny"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):  # the app's own names still work, with their Origin
            answer = httpx.get(url + "config", headers={"Host": host, "Origin": f"http://{host}"}, timeout=60)
            assert answer.status_code == 200 and "dependencies" in answer.text
        assert Client(url, verbose=False).predict(api_name="/list_characters") == []


def test_a_shared_launch_keeps_serving_other_host_names(tmp_path):
    with running_app(tmp_path / "ws", host="0.0.0.0") as (studio, url):  # reached by its LAN name or a proxy
        answer = httpx.get(url + "config", headers={"Host": "studio.lan:7860"}, timeout=60)
        assert answer.status_code == 200


# ---- 4: the generic job endpoints follow the owner rule -------------------------------------------
def owner_jobs(studio) -> dict:
    """The owner's jobs, made outside any request (as the CLI or a restart makes them): a download (an
    owner-only kind; it fails at once offline) and a job that holds the GPU lane until released."""
    release = threading.Event()

    def work(params, reporter):
        release.wait(120)
        reporter.check_cancel()
        return {}

    studio.jobs.register("owner_work", work)
    download = studio.jobs.wait(studio.jobs.submit("download", {"repo_id": "test/zq-owner-only"},
                                                   title="Download test/zq-owner-only").id, 30)
    held = studio.jobs.submit("owner_work", {}, title="zq-owner-only work")
    return {"download": download.id, "held": held.id, "release": release}


def test_a_stranger_neither_sees_nor_controls_the_owners_jobs_and_keeps_their_own(tmp_path):
    with running_app(tmp_path / "ws", host="0.0.0.0") as (studio, url):
        client = Client(url, verbose=False)
        mine = client.predict("a visitor's picture", "", 1, "", False, api_name="/generate")
        assert studio.jobs.wait(mine["id"], 120).status == "succeeded"
        jobs = owner_jobs(studio)
        try:
            listed = client.predict("", api_name="/list_jobs")
            assert [j["id"] for j in listed] == [mine["id"]]
            assert SECRET not in json.dumps(listed)
            for name in ("/job_status", "/cancel_job", "/resume_job"):
                for job_id in (jobs["download"], jobs["held"]):
                    message = refused(client, "No job with id", job_id, api_name=name)
                    assert SECRET not in message
            assert studio.jobs.get(jobs["held"]).status in ("queued", "running")
            assert studio.jobs.get(jobs["download"]).status == "failed"  # not resumed by the stranger
            assert client.predict(mine["id"], api_name="/job_status")["status"] == "succeeded"
            page = Browser(url)  # the Library's "All jobs", reached by the page's own events
            [table, picker, _] = page.outputs("jobs_tick", None, None)
            assert SECRET not in json.dumps([table, picker]) and mine["id"] in json.dumps(table)
            assert page.refusal("cancel_picked_job", jobs["held"])  # refused (not among this page's jobs)
            assert SECRET not in httpx.get(url + "config", timeout=60).text
            page.close()
        finally:
            jobs["release"].set()
        assert studio.jobs.wait(jobs["held"], 60).status == "succeeded"  # the stranger's cancel did nothing


@pytest.mark.parametrize("mode", ["private", "auth"])
def test_the_owner_sees_and_controls_every_job(tmp_path, mode):
    settings = {"auth": OWNER_LOGIN, "host": "0.0.0.0"} if mode == "auth" else {}
    with running_app(tmp_path / "ws", **settings) as (studio, url):
        client = Client(url, verbose=False, auth=OWNER_LOGIN if mode == "auth" else None)
        jobs = owner_jobs(studio)
        try:
            ids = [j["id"] for j in client.predict("", api_name="/list_jobs")]
            assert jobs["download"] in ids and jobs["held"] in ids
            assert client.predict(jobs["download"], api_name="/job_status")["status"] == "failed"
            assert client.predict(jobs["held"], api_name="/cancel_job")["id"] == jobs["held"]
        finally:
            jobs["release"].set()
        assert studio.jobs.wait(jobs["held"], 60).status == "canceled"


def test_the_rule_for_visitors_who_logged_in():
    ada, bob = Requester(False, "ada"), Requester(False, "bob")
    by_ada = {"kind": "train", "by": ada.stamp()}
    anonymous = {"kind": "train", "by": ANONYMOUS.stamp()}
    assert may_see(by_ada, ada) and not may_see(by_ada, bob) and not may_see(by_ada, ANONYMOUS)
    assert may_see(anonymous, bob) and may_see(by_ada, OWNER)
    assert not may_see({"kind": "train", "by": OWNER.stamp()}, ada)
    assert not may_see({"kind": "download"}, ada, {"download"})  # an older record of an owner-only kind
    assert may_see({"kind": "train"}, ada)  # an older record of a visitor kind: open, as it was
    assert not may_see({"kind": "train", "by": "owner"}, ada)  # a stamp that cannot be read is closed


# ---- 6: the engine banner names the model folder, never its path ----------------------------------
def test_the_banner_names_a_model_folder_without_its_path(tmp_path):
    folder = tmp_path / "private" / "models" / "FLUX.1-dev"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with running_app(tmp_path / "ws", host="0.0.0.0", engine="local", model=str(folder)) as (studio, url):
        config = httpx.get(url + "config", timeout=60).text
        assert "your model folder FLUX.1-dev" in config
        assert str(tmp_path) not in config and "/private/models" not in config
        page = Browser(url)
        banner = page.outputs("engine_banner")[0]
        assert "your model folder FLUX.1-dev" in banner and str(tmp_path) not in banner
        page.close()
