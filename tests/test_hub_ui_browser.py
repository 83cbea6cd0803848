"""A real Chromium edits a caption in Selection and publishes a LoRA from the Library to the fake hub.
Skipped without Debian's chromium, like tests/test_browser.py."""
from __future__ import annotations

import pytest

from tests.app_server import running_app
from tests.fake_hub import FakeHub, point_client_at
from tests.test_browser import WAIT, browser, open_tab, settle  # noqa: F401 (browser is a fixture)
from tests.test_hub_ui import REPO, WRITE, selected_sheet

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def shows(page, selector: str, text: str) -> None:
    """Until the component's text holds `text` (a dataframe keeps hidden copies of its cells, so the
    text is read, not a visible element waited for)."""
    page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
                           arg=[selector, text], timeout=WAIT)


def test_a_caption_is_edited_in_selection_and_keeps_the_trigger_word(browser, tmp_path, astronaut_path):  # noqa: F811
    cid, ids = selected_sheet(tmp_path / "ws", astronaut_path, 3)
    with running_app(tmp_path / "ws") as (studio, url):
        page = open_tab(browser, url, "3 · Selection")
        shows(page, "#caption-table", "photo of [trigger],")  # no trigger word typed yet
        trigger = page.locator("#selection-trigger textarea, #selection-trigger input").first
        trigger.fill("mila_v1")
        trigger.press("Enter")
        shows(page, "#caption-table", "photo of mila_v1,")
        settle(page)
        text = page.locator("#caption-text textarea")
        assert text.input_value().startswith("photo of mila_v1, ")  # the first selected image's
        text.fill("a woman in a green coat by the sea, blue eyes")  # the trigger word left out (and the box left)
        settle(page)
        page.get_by_role("button", name="Save caption").click()
        shows(page, "#caption-table", "mila_v1, a woman in a green coat by the sea, blue eyes")
        page.locator("#caption-message").get_by_text("the face's own traits").wait_for(timeout=WAIT)
        assert text.input_value() == "mila_v1, a woman in a green coat by the sea, blue eyes"
        record = studio.store.get("images", ids[0])
        assert record["training_caption"] == "[trigger], a woman in a green coat by the sea, blue eyes"

        # An image clicked into the set opens its own caption for editing.
        settle(page)
        page.locator("#selection-gallery .thumbnail-item").nth(3).click()
        page.locator("#selection-summary").get_by_text("4 selected").wait_for(timeout=WAIT)
        fourth = studio.characters.images(cid, "sheet")[3].id
        expected = next(r.caption for r in studio.captions.rows(cid, "mila_v1") if r.image_id == fourth)
        page.wait_for_function("text => document.querySelector('#caption-text textarea').value === text",
                               arg=expected, timeout=WAIT)
        assert expected.startswith("photo of mila_v1, ")

        page.locator("#caption-note").get_by_text("noise").wait_for(timeout=WAIT)  # the tiny engine says so
        settle(page)
        page.get_by_role("button", name="Replace in all").click()  # nothing to find: refused beside the panel
        page.locator("#caption-message").get_by_text("text to find").wait_for(timeout=WAIT)
        page.close()


def test_a_lora_is_published_from_the_library(browser, tmp_path, monkeypatch):  # noqa: F811
    from lora_studio.config import Settings
    from lora_studio.studio import Studio
    from tests.lora_factory import make_tiny_lora

    with Studio(Settings(workspace=tmp_path / "ws"), start=False) as before:
        before.library.import_file(make_tiny_lora(tmp_path / "mila.safetensors", seed=2), "mila", "mila_v1")
    with FakeHub() as hub:
        hub.add_token(WRITE, "ada", role="write")
        point_client_at(monkeypatch, hub.url, tmp_path / "hf-home")
        monkeypatch.setenv("HF_TOKEN", WRITE)
        with running_app(tmp_path / "ws") as (studio, url):
            page = open_tab(browser, url, "Library & generate")
            page.get_by_text("Publish to the Hugging Face Hub").click()
            page.locator("#publish-repo textarea, #publish-repo input").first.fill(REPO)
            settle(page)
            page.locator("#publish-button").click()
            link = page.locator("#publish-link")
            link.get_by_text(f"{hub.url}/{REPO}").wait_for(timeout=WAIT)
            progress = page.locator("#publish-progress").inner_text()
            assert "succeeded" in progress and " sent" in progress
            assert link.locator("a").get_attribute("href").endswith(REPO)
            repo = hub.repos[REPO]
            assert repo.private and repo.files["lora.safetensors"] == studio.library.path(
                studio.library.list()[0]).read_bytes()
            assert "instance_prompt: mila_v1" in repo.files["README.md"].decode()
            page.close()
