"""The Replicate account in the Settings page, against the fake Replicate API: the token checked with
the account call and kept out of every reply, file and log; the destination listed or created private;
and, on a shared link, the whole section refused to visitors (by name and by index)."""
from __future__ import annotations

import stat

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from lora_studio.config import ReplicateSettings
from lora_studio.engines.replicate.account import TokenFile
from tests.app_server import running_app
from tests.fake_replicate import FakeReplicate
from tests.hostile_kit import refused, unchanged

TOKEN = "r8_page_SECRET_token"
SETUP_ENDPOINTS = {"/setup_engine": ("local", "black-forest-labs/FLUX.1-dev", ""), "/replicate_token": (TOKEN,),
                   "/replicate_forget_token": (), "/replicate_models": (),
                   "/replicate_destination": ("fake-user/x",), "/replicate_create_model": ("x",)}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")
    with FakeReplicate(token=TOKEN, prediction_polls=1) as server:
        yield server


def by_index(url: str, fn_index: int, data: list | None = None) -> str:
    """Call any event by its index over raw HTTP, private ones included (gradio_client refuses those,
    a script does not): join the queue, read the event stream to its end, return it as text."""
    import httpx

    session = "hostile-setup"
    with httpx.Client(base_url=url, timeout=60) as http:
        joined = http.post("gradio_api/queue/join", json={"data": data or [], "fn_index": fn_index,
                                                           "session_hash": session, "event_data": None})
        assert joined.status_code == 200, joined.text
        return http.get("gradio_api/queue/data", params={"session_hash": session}).text


def files_text(root) -> str:
    """Every file the app wrote, but the token file itself."""
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.parent.name != "secrets")


def test_token_destination_and_a_generation_on_replicate(tmp_path, fake):
    settings = dict(replicate=ReplicateSettings(base_url=fake.url, trainer_version="v1"))
    with running_app(tmp_path / "ws", **settings) as (studio, url):
        client = Client(url, verbose=False)
        refused(client, r"refused this token \(401\)", "r8_wrong", api_name="/replicate_token")
        refused(client, "one word, no spaces", "two words", api_name="/replicate_token")
        assert not TokenFile(studio.store.root).path.exists()
        box, account = client.predict(TOKEN, api_name="/replicate_token")
        assert box == "" and "fake-user" in account and TOKEN not in account
        token_file = TokenFile(studio.store.root).path
        assert token_file.read_text() == TOKEN and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        _, listed = client.predict(api_name="/replicate_models")
        assert "No models" in listed
        refused(client, "no model fake-user/nope", "fake-user/nope", api_name="/replicate_destination")
        _, created, sources = client.predict("mila-loras", api_name="/replicate_create_model")
        assert fake.models["fake-user/mila-loras"]["visibility"] == "private"
        assert "fake-user/mila-loras" in created and "Replicate destination: fake-user/mila-loras (chosen here)" in sources
        assert fake.find("POST", r"^/v1/models$")[0].body["hardware"]
        refused(client, "already exists", "mila-loras", api_name="/replicate_create_model")
        _, listed = client.predict(api_name="/replicate_models")
        assert listed.startswith("1 model")
        client.predict("replicate", "", "", api_name="/setup_engine")
        assert studio.settings.replicate.destination == "fake-user/mila-loras"
        image = studio.generate("photo of mila", seed=2)  # the engine reads the page's token
        assert image.getpixel((0, 0))[0] == (2 * 37) % 256  # the fake's picture for this call (it paints the seed)
        assert fake.find("POST", "predictions")[-1].authorized
        assert TOKEN not in files_text(studio.store.root)
        assert TOKEN not in str(client.view_api(return_format="dict", print_info=False))


def test_the_environment_token_wins(tmp_path, fake, monkeypatch):
    with running_app(tmp_path / "ws", replicate=ReplicateSettings(base_url=fake.url)) as (studio, url):
        client = Client(url, verbose=False)
        client.predict(TOKEN, api_name="/replicate_token")
        monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_from_env")
        assert "environment" in studio.replicate.status().text()
        _, account = client.predict(api_name="/replicate_forget_token")
        assert "environment" in account and not TokenFile(studio.store.root).path.exists()


def test_visitors_on_a_shared_link_cannot_touch_setup(tmp_path):
    """Not a private launch (listening beyond this machine): no login, no owner."""
    with running_app(tmp_path / "ws", host="0.0.0.0") as (studio, url):
        TokenFile(studio.store.root).save(TOKEN)
        client = Client(url, verbose=False)
        with unchanged(studio.store.root):
            for name, args in SETUP_ENDPOINTS.items():
                refused(client, "Only the owner", *args, api_name=name)
            deps = client.config["dependencies"]
            private = [i for i, d in enumerate(deps) if d.get("api_name") in ("setup_engine", "replicate_token")]
            for index in private:  # by index too, as a script would
                with pytest.raises(AppError, match="Only the owner"):
                    client.predict(*SETUP_ENDPOINTS["/" + deps[index]["api_name"]], fn_index=index)
            sources = [c["id"] for c in client.config["components"]
                       if c.get("props", {}).get("elem_id") == "setup-sources"]
            loads = [i for i, d in enumerate(deps) if d.get("api_visibility") == "private" and d["outputs"][:1] == sources]
            assert len(loads) == 1
            for index in loads:  # the page's read-only view: no token, no server paths, the sentence
                reply = by_index(url, index)
                assert TOKEN not in reply and str(studio.store.root) not in reply and "Only the owner" in reply
        assert studio.settings.engine == "tiny" and TokenFile(studio.store.root).read() == TOKEN
