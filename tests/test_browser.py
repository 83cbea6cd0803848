"""A real headless Chromium clicks through the Selection tab and takes the README screenshot.

Needs Debian's `chromium` (never a downloaded browser). CI sets LORA_STUDIO_REQUIRE_BROWSER=1 so a
missing browser fails instead of skipping. LORA_STUDIO_UPDATE_SCREENSHOT=1 refreshes
assets/screenshot.png.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.app_server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]


def browser_or_skip():
    if CHROMIUM is None:
        if os.environ.get("LORA_STUDIO_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    return sync_playwright, CHROMIUM


def test_click_through_selection(tmp_path, astronaut_path):
    sync_playwright, executable = browser_or_skip()
    with running_app(tmp_path / "ws") as (studio, url):
        character = studio.characters.create("Astronaut")
        studio.characters.add_images(character["id"], [astronaut_path])
        studio.wait(studio.sheet.start(character["id"]).id, timeout=300)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="load")
            page.get_by_text("Demo mode: tiny built-in Flux").wait_for(timeout=30000)
            page.get_by_role("tab", name="3 · Selection").click()
            summary = page.locator("#selection-summary")
            summary.get_by_text("0 selected").wait_for(timeout=20000)
            page.get_by_role("button", name="Quick-select 25").click()
            summary.get_by_text("25 selected").wait_for(timeout=30000)
            page.locator("#selection-gallery .thumbnail-item").first.click()
            summary.get_by_text("24 selected").wait_for(timeout=20000)
            page.locator("#selection-gallery .thumbnail-item").first.click()
            summary.get_by_text("25 selected").wait_for(timeout=20000)
            shot = tmp_path / "screenshot.png"
            page.screenshot(path=str(shot), full_page=False)
            browser.close()
        assert len(studio.characters.get(character["id"])["selected"]) == 25
        assert shot.stat().st_size > 10_000
        if os.environ.get("LORA_STUDIO_UPDATE_SCREENSHOT"):
            shutil.copy(shot, ROOT / "assets" / "screenshot.png")
