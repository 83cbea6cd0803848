"""Settings → Models through the running app: gradio_client drives the token, the list and a download;
on a shared link a stranger reaches none of it, by name or by a private event's index."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.app_server import running_app
from tests.fake_hub import FakeHub, point_client_at, save_pipeline
from tests.hostile_kit import refused, unchanged

OPEN, GATED = "test/tiny-flux", "test/gated-flux"
TOKEN = "hf_with_access_0123456789"
NAMED = {"hf_token_status": [], "hf_login": [TOKEN], "hf_logout": [], "list_models": [False],
         "describe_model": [OPEN], "start_download": [OPEN], "download_progress": ["abc123"],
         "cancel_download": ["abc123"], "resume_download": ["abc123"]}


@pytest.fixture(scope="module")
def repo_folder(tmp_path_factory):
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    return save_pipeline(build_tiny_flux(), tmp_path_factory.mktemp("repo") / "dev")


@pytest.fixture
def hub(repo_folder, tmp_path, monkeypatch):
    with FakeHub() as fake:
        fake.add_repo(OPEN, repo_folder)
        fake.add_repo(GATED, repo_folder, gated=True)
        fake.add_token(TOKEN, "ada", access={GATED})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def token_file() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH)


@pytest.mark.slow  # the running app and a download
def test_owner_checks_a_token_lists_models_and_downloads_with_progress(hub, tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):
        studio.models._gpu_bytes = lambda: None
        client = Client(url, verbose=False)
        assert client.predict(api_name="/hf_token_status")["user"] is None
        state = client.predict(TOKEN, api_name="/hf_login")
        assert state["user"] == "ada" and TOKEN not in json.dumps(state)
        assert client.predict(api_name="/hf_token_status")["user"] == "ada"
        rows = client.predict(False, api_name="/list_models")
        assert [r["repo_id"] for r in rows][:1] == ["black-forest-labs/FLUX.1-dev"] and len(rows) == 10  # 8 Flux, 2 captioners
        assert all(r["need_gb"] > 5 for r in rows)  # the memory planner's numbers, in GB
        row = client.predict(GATED, api_name="/describe_model")
        assert row["download_bytes"] > 0 and row["status"] == "not downloaded"
        started = client.predict(GATED, api_name="/start_download")
        seen = []
        for _ in range(600):
            report = client.predict(started["job_id"], api_name="/download_progress")
            seen.append(report["bytes_done"])
            if report["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.1)
        assert report["status"] == "succeeded", report["message"]
        assert report["bytes_done"] == report["bytes_total"] == row["download_bytes"]
        assert seen == sorted(seen)
        assert client.predict(GATED, api_name="/describe_model")["status"] == "on disk"
        listing = json.dumps(client.view_api(return_format="dict")) + httpx.get(url + "config").text
        assert TOKEN not in listing
        assert client.predict(api_name="/hf_logout")["user"] is None and not token_file().exists()


def call_by_index(url: str, fn_index: int, data: list) -> str:
    """What Gradio's page sends for an event, private or not: join the queue by index, read the stream."""
    session = uuid.uuid4().hex[:10]
    with httpx.Client(base_url=url, timeout=60) as http:
        joined = http.post("gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                          "event_data": None, "trigger_id": None})
        if joined.status_code != 200:
            return f"http {joined.status_code}"
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            text = ""
            for line in stream.iter_lines():
                text += line + "\n"
                if "process_completed" in line:
                    break
    return text


def test_a_stranger_on_a_shared_link_reaches_nothing(hub, tmp_path):
    with running_app(tmp_path / "ws", host="0.0.0.0") as (studio, url):  # not a private launch
        client = Client(url, verbose=False)
        root = studio.store.root
        with unchanged(root):
            for name, args in NAMED.items():
                refused(client, "Only the owner", *args, api_name=f"/{name}")
            config = httpx.get(url + "config").json()
            labels = {c["id"]: c.get("props", {}).get("label") for c in config["components"]}
            ours = [d for d in config["dependencies"] if str(d.get("api_name")).startswith("models_")]
            assert len(ours) == 10 and all(d["api_visibility"] == "private" for d in ours)
            for dep in ours:
                data = [TOKEN if labels.get(i) == "Hugging Face token" else OPEN for i in dep["inputs"]]
                answer = call_by_index(url, dep["id"], data)
                assert TOKEN not in answer
                if dep["api_name"] not in ("models_open", "models_tick"):  # these only stay quiet for visitors
                    assert "Only the owner" in answer, (dep["api_name"], answer[-300:])
        assert not token_file().exists()
        assert studio.models.downloads() == []
        asked = [r for r in hub.requests if not r[1].startswith("/api/telemetry/")]  # gradio_client's own ping
        assert asked == []  # nothing reached the Hub on a stranger's behalf


def test_a_refusal_reads_the_same_in_the_page_api_and_cli(hub, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    with running_app(tmp_path / "ws") as (studio, url):
        message = refused(Client(url, verbose=False), "settings/tokens", GATED, api_name="/start_download")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    run = subprocess.run([sys.executable, "-m", "lora_studio", "models", "download", GATED, "--json",
                          "--workspace", str(tmp_path / "ws2")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1
    printed = json.loads(run.stdout)["error"]
    assert "https://huggingface.co/settings/tokens" in printed and printed in message
    run = subprocess.run([sys.executable, "-m", "lora_studio", "models", "download", GATED, "--json",
                          "--workspace", str(tmp_path / "ws2")], cwd=ROOT, env={**env, "HF_TOKEN": TOKEN},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["status"] == "succeeded"


def test_cli_login_reads_the_token_from_stdin_and_never_prints_it(hub, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-m", "lora_studio", "models"]
    workspace = ["--workspace", str(tmp_path / "ws")]
    bad = subprocess.run(command + ["login"] + workspace, input="hf_not_a_known_token\n", cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "refused" in bad.stderr and "hf_not_a_known_token" not in bad.stderr
    good = subprocess.run(command + ["login", "--json"] + workspace, input=TOKEN + "\n", cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == {"user": "ada", "source": "file"} and TOKEN not in good.stdout + good.stderr
    assert (tmp_path / "hf-home" / "token").read_text().strip() == TOKEN  # huggingface_hub's file, as `hf` reads it
    out = subprocess.run(command + ["logout"] + workspace, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and not (tmp_path / "hf-home" / "token").exists()


@pytest.mark.slow  # a CLI subprocess
def test_cli_lists_the_catalogue_as_json(hub, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "lora_studio", "models", "list", "--json", "--workspace",
                          str(tmp_path / "ws")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [r["repo_id"] for r in rows] == ["black-forest-labs/FLUX.1-dev", "diffusers/FLUX.1-dev-bnb-8bit",
                                            "diffusers/FLUX.1-dev-bnb-4bit", "black-forest-labs/FLUX.1-Kontext-dev",
                                            *(f"black-forest-labs/FLUX.2-klein-{n}" for n in
                                              ("4B", "base-4B", "9B", "base-9B")),
                                            "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"]
    needs = [r["need_gb"] for r in rows[:3]]
    assert needs == sorted(needs, reverse=True)  # the quantized copies plan for less GPU memory
    assert all(r["status"] == "not known" and "No model" in r["problem"] for r in rows)  # not on this hub
    assert all("No NVIDIA GPU" in r["recommendation"] for r in rows[:3])


DEV = "black-forest-labs/FLUX.1-dev"


def rows_of(table) -> dict:
    """A models table as the page receives it: {model: (status, advice)}."""
    headers = table["headers"]
    return {row[0]: (row[headers.index("status")], row[headers.index("advice")]) for row in table["data"]}


def until_done(page, job_id: str) -> list:
    """The download timer's replies until the one that finds the job ended: (progress, poll, table, use)."""
    for _ in range(600):
        progress, poll, table, use = page.outputs("models_tick", job_id)
        if isinstance(table, dict) and "data" in table:  # sent: the download ended
            return [progress, poll, table, use]
        time.sleep(0.1)
    raise AssertionError("the download never ended")


def test_the_table_keeps_up_with_the_token_and_the_downloads_and_fills_the_engine(repo_folder, tmp_path, monkeypatch):
    from tests.hostile_kit import Browser

    with FakeHub() as fake:
        fake.add_repo(DEV, repo_folder, gated=True)
        fake.add_token(TOKEN, "ada", access={DEV})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        with running_app(tmp_path / "ws") as (studio, url):
            studio.models._gpu_bytes = lambda: None
            page = Browser(url)  # the page's own events, by index
            _, table, *_ = page.outputs("models_open")
            assert rows_of(table)[DEV][0] == "not known" and "gated" in rows_of(table)[DEV][1]
            status, token, table, notice = page.outputs("models_save_token", TOKEN)
            assert "ada" in status and token == "" and notice == ""
            assert rows_of(table)[DEV][0] == "not downloaded"  # asked again with the new token

            weights = "transformer/diffusion_pytorch_model.safetensors"
            hold = fake.hold(DEV, weights, after=len(fake.repos[DEV].files[weights]) // 2)
            job_id, *_ = page.outputs("models_begin", DEV)
            assert hold.reached.wait(60)
            page.outputs("models_stop", job_id)
            hold.released.set()
            progress, _, table, use = until_done(page, job_id)
            assert "canceled" in progress and rows_of(table)[DEV][0].startswith("partly on disk")
            assert use["visible"] is False
            page.outputs("models_resume", job_id)
            progress, _, table, use = until_done(page, job_id)
            assert "succeeded" in progress and rows_of(table)[DEV][0] == "on disk" and use["visible"] is True
            assert client_row(url, DEV)["in_cache"] is True

            notice, engine, model, kontext, said = page.outputs("models_use", job_id)  # the fields in order
            assert engine == "local" and model == DEV and "Switch engine" in said and notice == ""
            assert studio.settings.engine == "tiny"  # filled in, not switched: the owner clicks Switch engine

            status, table, notice = page.outputs("models_log_out")
            assert "No Hugging Face token" in status
            assert rows_of(table)[DEV][0].startswith("on disk")  # asked again without the token: still there
            row = client_row(url, DEV)
            assert row["status"].startswith("on disk") and row["in_cache"] is True  # the two never disagree
            refusal = page.refusal("models_use", "")
            assert "No finished download" in refusal and "ls-notice" in refusal  # beside, not an Error badge
            page.close()


def client_row(url: str, model: str) -> dict:
    return Client(url, verbose=False).predict(model, api_name="/describe_model")


def test_slow_links_read_in_kilobytes():
    from lora_studio.services.settings.local_models import Rate
    from lora_studio.sizes import rate_text as speed_text

    assert speed_text(35_000) == "35 KB/s" and speed_text(2_500_000) == "2.5 MB/s"
    now = [0.0]
    rate = Rate(0, 10_000_000, clock=lambda: now[0])
    now[0] = 2.0
    rate.add(80_000)
    assert "40 KB/s" in rate.text() and "0.0 MB/s" not in rate.text()
