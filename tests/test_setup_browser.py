"""Engine setup in a real browser: the first-run card leads to Settings, and the page switches the engine."""
from __future__ import annotations

import pytest

from tests.app_server import running_app
from tests.test_browser import WAIT, browser, settle  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser


def test_first_run_card_to_a_local_model_and_back(browser, tmp_path):  # noqa: F811
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    folder = tmp_path / "flux-dev"
    build_tiny_flux(seed=1).save_pretrained(folder)
    with running_app(tmp_path / "ws") as (studio, url):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="load")
        banner = page.locator("#engine-banner")
        banner.get_by_text("First run?").wait_for(timeout=WAIT)
        settle(page)
        page.locator("#first-run").click()
        sources = page.locator("#setup-sources")
        sources.get_by_text("Engine: tiny (default)").wait_for(timeout=WAIT)
        page.locator("#setup-engine").get_by_text("local", exact=True).click()
        page.locator("#setup-model textarea, #setup-model input").first.fill(str(folder))
        page.locator("#setup-switch").click()
        page.locator("#setup-status").get_by_text("Switched to").wait_for(timeout=WAIT)
        banner.get_by_text("Local FLUX.1 from").wait_for(timeout=WAIT)
        sources.get_by_text("(chosen here)").first.wait_for(timeout=WAIT)
        assert not page.locator("#first-run").is_visible()
        assert studio.settings.engine == "local" and studio.settings.model == str(folder)
        page.locator("#setup-engine").get_by_text("tiny", exact=True).click()
        page.locator("#setup-model textarea, #setup-model input").first.fill("")
        page.locator("#setup-switch").click()
        banner.get_by_text("First run?").wait_for(timeout=WAIT)
        assert studio.settings.engine == "tiny"
        page.close()
