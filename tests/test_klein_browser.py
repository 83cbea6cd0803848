"""The FLUX.2 [klein] journey in a real Chromium, from a fresh workspace with no FLUX.1 repo: the first-run
card's button downloads Klein 4B from the fake hub with no token and switches to it, then the sheet,
quick-select, training, a sweep on both checkpoints and the export, each by the page's own controls.
Skipped without Debian's chromium, like tests/test_browser.py."""
from __future__ import annotations

import time

import pytest

from lora_studio.engines.family import KLEIN_4B
from tests.app_server import running_app
from tests.fake_hub import klein_folders, klein_hub
from tests.test_browser import WAIT, browser, settle  # noqa: F401 (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LONG = WAIT * 20  # a sheet or a training on a shared 2-core machine


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with klein_hub(klein_folders(tmp_path / "repos"), monkeypatch, tmp_path / "hf-home") as fake:
        yield fake


def finished(page, studio, kind: str, title: str) -> None:
    """Until the latest `kind` job the page started has ended (it must succeed), and its card on the page
    says so."""
    deadline = time.time() + LONG / 1000
    while time.time() < deadline:
        jobs = studio.jobs.list(kind)
        if jobs and jobs[-1].done:
            break
        time.sleep(0.3)
    assert jobs, f"the page started no {kind} job"
    assert jobs[-1].status == "succeeded", jobs[-1].error
    page.locator(".ls-job[data-status='succeeded']:visible").filter(has_text=title).first.wait_for(timeout=WAIT)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    settle(page)


def test_the_klein_journey_in_chromium(browser, hub, tmp_path):  # noqa: F811
    with running_app(tmp_path / "ws", sheet_size=64, device="cpu") as (studio, url):
        studio.models._gpu_bytes = lambda: None
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="load")
        banner = page.locator("#engine-banner")
        banner.get_by_text("no token needed").first.wait_for(timeout=WAIT)  # the offer, with its size
        assert "GB to download" in banner.inner_text()
        settle(page)
        page.locator("#first-run-klein").click()
        banner.get_by_text("switches to").wait_for(timeout=WAIT)
        deadline = time.time() + 300
        while studio.settings.model != KLEIN_4B and time.time() < deadline:
            time.sleep(0.2)
        assert (studio.settings.engine, studio.settings.model) == ("local", KLEIN_4B)
        page.reload(wait_until="load")
        banner.get_by_text("Local FLUX.2 [klein] from black-forest-labs/FLUX.2-klein-4B").wait_for(timeout=WAIT)
        assert not page.locator("#first-run-klein").is_visible()
        settle(page)

        page.get_by_label("New character name").fill("Mila")
        page.get_by_role("button", name="Create character").click()
        settle(page)
        tab(page, "1 · Reference")
        page.get_by_role("button", name="Use the sample character").click()
        settle(page)

        tab(page, "2 · Character sheet")
        page.get_by_label("Regenerate variations whose face drifts (identity gate)").uncheck()  # noise: no face
        page.get_by_role("button", name="Generate character sheet").click()
        finished(page, studio, "sheet", "Character sheet")
        assert len(studio.store.find("images", kind="sheet")) == 30

        tab(page, "3 · Selection")
        page.get_by_role("button", name="Quick-select 25").click()
        page.locator("#selection-summary").get_by_text("25 selected").wait_for(timeout=WAIT)
        page.get_by_label("Trigger word").fill("mila_v1")
        page.get_by_role("button", name="Export dataset for training").click()
        settle(page)

        tab(page, "4 · Training")
        page.get_by_label("LoRA name").fill("mila")
        for label, value in (("Steps", "4"), ("Rank", "4"), ("Resolution (px)", "256")):
            field = page.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Tab")
        settle(page)
        page.get_by_role("button", name="Start training").click()
        finished(page, studio, "train", "Train LoRA · mila")
        record = studio.library.resolve("mila")
        assert record["metadata"]["family"] == "flux2-klein"

        tab(page, "5 · Strength tester")
        page.get_by_label("Strengths").fill("0, 1.0")
        page.get_by_label("Seeds").fill("1")
        page.locator("#tester-both input").check()
        settle(page)
        page.get_by_role("button", name="Run strength test").click()
        finished(page, studio, "sweep", "Strength test · mila")
        page.get_by_text("Recommended strength by checkpoint").wait_for(timeout=WAIT)

        tab(page, "Library & generate")
        pick = page.get_by_label("LoRA", exact=True)
        pick.fill("mila")
        pick.press("Enter")
        page.get_by_text("family: FLUX.2 [klein]").first.wait_for(timeout=WAIT)  # the library names the family
        settle(page)
        page.get_by_role("button", name="Export zip").click()
        page.locator(f"a[href*='{record['id']}.zip']").first.wait_for(state="attached", timeout=WAIT)
        page.close()
