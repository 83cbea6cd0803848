"""A new user's first hour in a real Chromium: the words the page shows are true and nothing stale stays
on it (see tests/test_first_hour_words.py for the same words below the page). Skipped without Debian's
chromium, like tests/test_browser.py."""
from __future__ import annotations

import pytest

from tests.app_server import running_app
from tests.hostile_kit import fake_sheet
from tests.test_browser import WAIT, browser, open_tab, settle  # noqa: F401 (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def workspace(tmp_path, astronaut_path):
    """A workspace with one character whose sheet is made, 20 images selected and exported as a dataset
    (made before the app starts, so the page lists them)."""
    from lora_studio.config import Settings
    from lora_studio.studio import Studio

    with Studio(Settings(workspace=tmp_path / "ws"), start=False) as studio:
        character = studio.characters.create("Mila")
        studio.characters.add_images(character["id"], [astronaut_path])
        studio.selection.set_selection(character["id"], fake_sheet(studio, character["id"])[:20])
        studio.selection.export_dataset(character["id"], "mila_v1")
    return tmp_path / "ws"


def test_the_first_page_says_one_thing_and_keeps_the_form_true(browser, workspace):  # noqa: F811
    with running_app(workspace) as (_, url):
        page = open_tab(browser, url, "4 · Training")
        banner = page.locator("#engine-banner").inner_text()
        assert "needs no restart" in banner and "For real images start with" not in banner
        alpha = page.get_by_label("Alpha (blank = same as rank)")
        assert alpha.input_value() == ""  # blank: the rank, as its label says (not 0)
        preset = page.locator("#training-preset")
        for name in ("Expert", "Standard"):
            preset.get_by_text(name).click()
            settle(page)
            assert alpha.input_value() == "", name
        plan = page.get_by_text("Tiny built-in model").first.inner_text()
        assert "FLUX.1-dev" not in plan and "Kontext" not in plan

        where = page.locator("#training-where input")
        where.click()
        page.get_by_role("option", name="In an isolated worker process").click()
        settle(page)
        page.close()
        again = open_tab(browser, url, "4 · Training")  # a fresh page opens where the user left it
        again.wait_for_function("() => document.querySelector('#training-where input').value.includes('isolated')",
                                timeout=WAIT)
        again.close()


def test_an_empty_trigger_word_is_said_under_the_export_button(browser, workspace):  # noqa: F811
    with running_app(workspace) as (_, url):
        page = open_tab(browser, url, "3 · Selection")
        page.locator("#selection-summary").get_by_text("20 selected").wait_for(timeout=WAIT)
        page.get_by_role("button", name="Export dataset for training").click()
        page.locator("#selection-exported").get_by_text("Write a trigger word first").wait_for(timeout=WAIT)
        page.close()


def test_a_second_training_shows_its_own_job(browser, workspace):  # noqa: F811
    """A tick that left before Start was clicked must not put the previous, finished job back."""
    with running_app(workspace, concurrency=4) as (studio, url):  # as launch.py serves: ticks run beside Start
        page = open_tab(browser, url, "4 · Training")
        steps = page.locator("#training-steps input")
        steps.fill("2")
        steps.press("Tab")
        for name in ("first", "second"):
            page.get_by_label("LoRA name").fill(name)
            page.get_by_role("button", name="Start training").click()
            job = page.locator(".ls-job b", has_text="Train LoRA")
            job.get_by_text(name).wait_for(timeout=WAIT)
            if name == "first":
                page.get_by_text("saved as LoRA").wait_for(timeout=WAIT * 10)
                settle(page)
        for _ in range(12):  # three seconds of ticks: the pick stays on the second job...
            page.wait_for_timeout(250)
            assert "second" in page.get_by_label("Training job").input_value()
        assert "second" in job.inner_text()  # ...and so does the panel (a tick sent before Start answered may
        # flash the job it was sent for, once; it never takes the pick back)
        studio.wait(studio.jobs.list("train")[-1].id, 600)
        page.close()
