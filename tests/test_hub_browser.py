"""A real Chromium in Settings → Models: open the section, save a token, download a model from the fake
hub and watch the bytes arrive. Skipped without Debian's chromium, like tests/test_browser.py."""
from __future__ import annotations

import pytest

from tests.app_server import running_app
from tests.fake_hub import FakeHub, point_client_at, save_pipeline
from tests.test_browser import WAIT, browser, open_tab, settle  # noqa: F401 (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
OPEN, TOKEN = "test/tiny-flux", "hf_browser_token_01234"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    folder = save_pipeline(build_tiny_flux(), tmp_path / "repo")
    with FakeHub() as fake:
        fake.add_repo(OPEN, folder)
        fake.add_token(TOKEN, "ada")
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def test_owner_saves_a_token_and_downloads_with_visible_progress(browser, hub, tmp_path):  # noqa: F811
    with running_app(tmp_path / "ws") as (studio, url):
        studio.models._gpu_bytes = lambda: None
        page = open_tab(browser, url, "Settings")
        page.get_by_text("Models: downloads and the Hugging Face token").click()
        page.locator("#model-table").get_by_text("black-forest-labs/FLUX.1-dev").first.wait_for(timeout=WAIT)
        assert "No Hugging Face token" in page.locator("#hf-token-status").inner_text()
        page.get_by_label("Hugging Face token").fill(TOKEN)
        page.get_by_role("button", name="Check and save").click()
        page.locator("#hf-token-status").get_by_text("ada").wait_for(timeout=WAIT)
        assert TOKEN not in page.content()
        box = page.get_by_label("Model: from the list")
        box.fill(OPEN)
        box.press("Enter")
        settle(page)
        page.get_by_role("button", name="Download", exact=True).click()
        page.locator("#download-progress [data-status='succeeded']").wait_for(timeout=WAIT * 2)
        assert OPEN in page.locator("#download-progress").inner_text()
        assert hub.bytes_served(OPEN) == studio.models.progress(studio.models.downloads()[0].id)["bytes_total"]
        page.close()
