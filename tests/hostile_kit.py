"""Shared pieces of the hostile-input tests: workspace snapshots, refusals read the way a stranger
reads them (gradio_client and raw HTTP), and quick fixtures (a sheet without running Kontext).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError

from tests.conftest import noise_image

GENERIC = "upstream Gradio app has raised an exception"


def upload_folder() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def snapshot(root: Path) -> dict:
    """Every file's hash, every folder and every record, so a refusal can be shown to have changed nothing."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_dir():
            files[path.relative_to(root).as_posix() + "/"] = "folder"  # an empty folder left behind counts
        elif path.name != "studio.json":
            files[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    db = root / "studio.json"
    records = json.loads(db.read_text()) if db.exists() and db.read_text().strip() else {}
    return {"files": files, "records": records}


@contextmanager
def unchanged(root: Path):
    """The block may be refused as often as it likes: the workspace must look exactly the same after."""
    before = snapshot(root)
    yield
    after = snapshot(root)
    assert after["records"] == before["records"], "a refused request changed the database"
    assert after["files"] == before["files"], "a refused request changed the workspace's files"


def refused(client, pattern: str, *args, api_name: str) -> str:
    """Call an endpoint; it must refuse with our own words (never Gradio's generic error)."""
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    message = str(info.value)
    assert GENERIC not in message, f"{api_name} failed without saying why"
    assert _matches(pattern, message), f"{api_name}: {message!r} does not say {pattern!r}"
    return message


def _matches(pattern: str, message: str) -> bool:
    import re

    return re.search(pattern, message, re.IGNORECASE) is not None


def raw_call(url: str, api_name: str, body: bytes | dict, timeout: float = 120) -> tuple[str, object]:
    """POST /gradio_api/call/<name> with any body (even JSON no client would write) and read the
    event stream: ("complete", data) or ("error", message)."""
    content = body if isinstance(body, bytes) else json.dumps({"data": body}).encode()
    with httpx.Client(base_url=url, timeout=timeout) as http:
        started = http.post(f"gradio_api/call/{api_name}", content=content,
                            headers={"content-type": "application/json"})
        if started.status_code != 200:
            return "http", started.status_code
        event_id = started.json()["event_id"]
        text = http.get(f"gradio_api/call/{api_name}/{event_id}").text
    kind, data = "", None
    for line in text.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line.split(":", 1)[1])
    if kind == "error":
        return "error", (data or {}).get("error") if isinstance(data, dict) else data
    return kind, data


def fake_sheet(studio, character_id: str) -> list[str]:
    """The 30 sheet records and files a sheet job would write, without running Kontext (minutes on
    this machine): selection and dataset tests need the images, not how they were drawn."""
    from lora_studio.services.sheet_prompts import SHEET_PROMPTS

    for prompt in SHEET_PROMPTS:
        studio.sheet._save(character_id, prompt, noise_image(100 + prompt.slot, 64), 1000 + prompt.slot, 1, None)
    return [i.id for i in studio.characters.images(character_id, "sheet")]


def character_with_sheet(studio, name: str, reference: Path) -> tuple[str, list[str]]:
    character = studio.characters.create(name)
    studio.characters.add_images(character["id"], [reference])
    return character["id"], fake_sheet(studio, character["id"])


def dataset_for(studio, name: str, reference: Path, trigger: str = "mila_v1") -> dict:
    cid, ids = character_with_sheet(studio, name, reference)
    studio.selection.set_selection(cid, ids[:20])
    return studio.selection.export_dataset(cid, trigger)


class Browser:
    """One visitor's page as the browser drives it: its own session and cookies, every event reached
    by its index over /gradio_api/queue/join, hidden (api_visibility="private") or not."""

    def __init__(self, url: str, login: tuple[str, str] | None = None) -> None:
        import uuid

        self.http = httpx.Client(base_url=url, timeout=120)
        self.session = uuid.uuid4().hex[:11]
        if login:
            answer = self.http.post("login", data={"username": login[0], "password": login[1]})
            assert answer.status_code == 200, answer.text
        config = self.http.get("config").json()
        self.events = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def call(self, name: str, *data) -> dict:
        """Run event `name` (its index looked up once, as the page does) and return Gradio's
        process_completed message: {"success": bool, "output": {"data": [...]} or {"error": ...}}."""
        body = {"data": list(data), "fn_index": self.events[name], "session_hash": self.session,
                "event_data": None, "trigger_id": None}
        joined = self.http.post("gradio_api/queue/join", content=json.dumps(body).encode(),  # "\ud800" escapes too
                                headers={"content-type": "application/json"})
        assert joined.status_code == 200, joined.text
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return message
        raise AssertionError(f"{name}: the stream ended without a result")

    def outputs(self, name: str, *data) -> list:
        message = self.call(name, *data)
        assert message.get("success"), f"{name} failed: {message.get('output')}"
        return message["output"]["data"]

    def refusal(self, name: str, *data) -> str:
        """The words a refused event shows: a raised gr.Error, or the notice a `beside` handler returns."""
        message = self.call(name, *data)
        if not message.get("success"):
            return str(message["output"].get("error"))
        return " ".join(str(v) for v in message["output"]["data"] if isinstance(v, str))

    def close(self) -> None:
        self.http.close()
