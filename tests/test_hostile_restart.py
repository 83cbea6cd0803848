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
}
POISONS_MORE = {
    "studio.json": _dump({"characters": {"1": {"id": "c1", "name": SURROGATE}}}),
    "replicate_prices.json": _dump({"prices": {"kontext": {"usd": 0}}}),
    "preferences.json": b"\xff\xfe not utf-8",
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
