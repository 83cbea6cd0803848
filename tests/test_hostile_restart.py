"""A restart after each settings file was poisoned: the file is set aside with a timestamp, the
defaults are used, the page answers and the banner and the log say which file went where."""
from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.app_server import running_app

pytestmark = pytest.mark.slow  # starts the app once per poisoned file

SURROGATE = "x \ud800 y"  # what one request could once store; json.dumps writes it as an escape


def _dump(value) -> str:
    return json.dumps(value)  # ensure_ascii: "\\ud800" in the file, a lone surrogate once parsed


POISONS = {
    "replicate_prices.json": _dump({"prices": {"lora": {"usd": 0.03, "source": SURROGATE}}}),
    "preferences.json": _dump({"tester.prompt": SURROGATE, "character": "c1"}),
    "presets.json": _dump({"presets": [{"name": "Mine", "steps": 10, "rank": 4, "learning_rate": 1e-3,
                                        "resolution": 1e300}]}),
    "tasks.json": "{broken",
    "studio.json": "{broken",
    "setup.json": "[" * 100_000 + "]" * 100_000,  # RecursionError in the JSON reader
}
POISONS_MORE = {
    "studio.json": _dump({"characters": {"1": {"id": "c1", "name": SURROGATE}}}),
    "replicate_prices.json": _dump({"prices": {"kontext": {"usd": 0}}}),
    "preferences.json": b"\xff\xfe not utf-8",
    "setup.json": _dump({"engine": ["local"], "model": {"deep": 1}}),
}


def _cases():
    return [(name, text) for table in (POISONS, POISONS_MORE) for name, text in table.items()]


@pytest.mark.parametrize("name, poison", _cases(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_cases())])
def test_a_poisoned_settings_file_never_stops_the_next_start(tmp_path, name, poison, caplog):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    target = workspace / name
    target.write_bytes(poison if isinstance(poison, bytes) else poison.encode())
    with caplog.at_level(logging.WARNING, logger="lora_studio"):
        with running_app(workspace) as (studio, url):
            page = httpx.get(url, timeout=60)
            assert page.status_code == 200
            config = httpx.get(url + "config", timeout=60)
            assert config.status_code == 200 and "set aside" in config.text and name in config.text
            [moved] = studio.moved
            assert moved.name == name and (workspace / moved.moved_to).read_bytes() == target_bytes(poison)
            assert not target.exists() or target.read_bytes() != target_bytes(poison)
    assert any(name in record.getMessage() and "moved aside" in record.getMessage() for record in caplog.records)
    with running_app(workspace) as (studio, url):  # and the start after that is a clean one
        assert httpx.get(url, timeout=60).status_code == 200 and studio.moved == []


def target_bytes(poison) -> bytes:
    return poison if isinstance(poison, bytes) else poison.encode()


def test_job_records_without_a_usable_id_are_set_aside_and_the_models_section_opens(tmp_path):
    from tests.hostile_kit import Browser

    workspace = tmp_path / "ws"
    workspace.mkdir()
    records = [{"id": 5, "kind": "download", "status": "interrupted", "params": {"repo_id": "a/b"}},
               {"kind": "download", "status": "running", "params": {"repo_id": "a/c"}},
               {"id": "ok1", "kind": "download", "status": "failed", "params": {"repo_id": "a/d"}}]
    (workspace / "studio.json").write_text(_dump({"jobs": {str(n): r for n, r in enumerate(records, 1)}}))
    with running_app(workspace) as (studio, url):
        assert httpx.get(url, timeout=60).status_code == 200
        [moved] = studio.moved
        kept = json.loads((workspace / moved.moved_to).read_text())
        assert [r.get("id") for r in kept["jobs"]] == [5, None] and "2 records" in moved.sentence()
        assert [j.id for j in studio.jobs.list()] == ["ok1"]
        page = Browser(url)
        opened = page.outputs("models_open")  # Settings → Models: the downloads list, not a bare "Error"
        assert opened[2] == "ok1" and "Error" not in json.dumps(opened[:1])
        page.close()
    with running_app(workspace) as (studio, url):
        assert httpx.get(url, timeout=60).status_code == 200 and studio.moved == []


def test_a_token_file_that_is_not_text_is_set_aside_and_log_out_works(tmp_path, monkeypatch):
    from gradio_client import Client

    from tests.fake_hub import point_client_at

    home = tmp_path / "hf-home"
    point_client_at(monkeypatch, "http://127.0.0.1:9", home)  # no Hub is asked: there is no token to check
    home.mkdir()
    (home / "token").write_bytes(b"\xff\xfe hf_\x00 not utf-8")
    with running_app(tmp_path / "ws") as (studio, url):
        assert any("Hugging Face token file" in note for note in studio.startup_notes())
        client = Client(url, verbose=False)
        state = client.predict(api_name="/hf_token_status")
        assert state["user"] is None
        assert client.predict(api_name="/hf_logout")["user"] is None
    assert not (home / "token").exists() and list(home.glob("token.broken-*"))
    with running_app(tmp_path / "ws2") as (studio, url):
        client = Client(url, verbose=False)  # (gradio_client reads huggingface_hub's token file itself)
        (home / "token").write_bytes(b"\xff again")  # poisoned while the app runs: the page still answers
        state = client.predict(api_name="/hf_token_status")
        assert state["user"] is None and "could not be used" in state["text"]
    with running_app(tmp_path / "ws") as (studio, url):
        assert studio.moved == []


def test_a_model_folder_whose_index_is_nested_100000_deep_does_not_stop_a_start(tmp_path):
    from lora_studio.services.settings import EngineChoice

    folder = tmp_path / "models" / "FLUX.1-dev"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text("[" * 100_000 + "]" * 100_000)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "setup.json").write_text(_dump(EngineChoice("local", str(folder)).as_dict()))
    for settings in ({}, {"engine": "local", "model": str(folder)}):  # chosen on the page, or by a flag
        with running_app(workspace, **settings) as (studio, url):
            assert studio.settings.model == str(folder)
            config = httpx.get(url + "config", timeout=60)
            assert config.status_code == 200 and "your model folder FLUX.1-dev" in config.text
