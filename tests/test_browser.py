"""A real headless Chromium drives the app: the selection you can see, errors beside the gallery, a
saved preset that survives a restart, and the README screenshot.

Needs Debian's `chromium` (never a downloaded browser). CI sets LORA_STUDIO_REQUIRE_BROWSER=1 so a
missing browser fails instead of skipping. LORA_STUDIO_UPDATE_SCREENSHOT=1 refreshes
assets/screenshot.png. The sheet comes from `PhotoEngine` (crops of the sample photo), so it takes
seconds and every image has a real face distance and flags.
"""
from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_server import running_app
from tests.photo_engine import PhotoEngine

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WAIT = 30000


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("LORA_STUDIO_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sheet_app(tmp_path_factory, astronaut_path):
    """The app with one character whose 30-image sheet is made and measured."""
    workspace = tmp_path_factory.mktemp("browser") / "ws"
    with running_app(workspace, engine_object=PhotoEngine(astronaut_path)) as (studio, url):
        character = studio.characters.create("Astronaut")
        studio.characters.add_images(character["id"], [astronaut_path])
        studio.wait(studio.sheet.start(character["id"]).id, timeout=300)
        yield studio, url, character["id"]


def open_tab(browser, url, tab: str):
    """A new page on `tab` once the opening events have ended: the remembered character arrives after
    the first render and refreshes the tab a second time, so one idle moment is not the end of it."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url, wait_until="load")
    page.locator("#engine-banner").wait_for(timeout=WAIT)  # the page has rendered
    settle(page)
    page.get_by_role("tab", name=tab).click()
    settle(page)
    return page


IDLE = """sel => [...document.querySelectorAll(`${sel} [data-testid="status-tracker"]`)].every(
             el => el.classList.contains("hide") || getComputedStyle(el).display === "none"
                   || getComputedStyle(el).visibility === "hidden" || getComputedStyle(el).opacity === "0")"""


def wait_idle(page, selector: str = "#selection-gallery") -> None:
    """Until no event is running on this component: while one runs, Gradio lays a status overlay over it
    that takes the clicks, and the component re-renders when the event ends."""
    page.wait_for_function(IDLE, arg=selector, timeout=WAIT)


def settle(page, quiet_ms: int = 1500) -> None:
    """Until no component of the page has shown a running event for `quiet_ms` in a row, counted from
    this call: an event just dispatched (a click) may not have drawn its overlay yet."""
    page.evaluate("() => { window.__busyAt = performance.now(); }")
    page.wait_for_function(
        f"""quiet => {{
             const now = performance.now();
             if (!({IDLE})("body")) {{ window.__busyAt = now; return false; }}
             return now - window.__busyAt >= quiet;
           }}""",
        arg=quiet_ms, timeout=WAIT, polling=100)


def thumbnail_pixels(page, index: int) -> np.ndarray:
    """The thumbnail as pixels, cut to 140x140 (its box can round to a pixel more or less), once it
    is drawn and still: a click re-renders the gallery, a new <img> is blank until decoded, and a
    running event dims the gallery. So shots are taken until two in a row agree and show a picture."""
    item = page.locator("#selection-gallery .thumbnail-item").nth(index)
    deadline, previous = time.monotonic() + WAIT / 1000, None
    while True:
        wait_idle(page)
        shot = np.asarray(Image.open(io.BytesIO(item.screenshot())).convert("RGB"), dtype=np.float32)[:140, :140]
        drawn = shot.std() > 20  # a blank or half-loaded box is nearly flat
        if drawn and previous is not None and previous.shape == shot.shape and np.abs(shot - previous).mean() < 0.5:
            return shot
        if time.monotonic() > deadline:
            raise AssertionError("the thumbnail never settled into one drawn picture")
        previous = shot
        page.wait_for_timeout(150)


def colourfulness(pixels: np.ndarray) -> float:
    """Mean spread between a pixel's strongest and weakest channel: 0 for grey."""
    return float((pixels.max(axis=2) - pixels.min(axis=2)).mean())


def test_selected_and_unselected_images_look_different(browser, sheet_app, tmp_path):
    studio, url, cid = sheet_app
    studio.selection.set_selection(cid, [])
    page = open_tab(browser, url, "3 · Selection")
    summary, first = page.locator("#selection-summary"), page.locator("#selection-gallery .thumbnail-item").first
    summary.get_by_text("0 selected").wait_for(timeout=WAIT)
    first.locator('img[alt^="○"]').wait_for(timeout=WAIT)
    page.mouse.move(0, 0)
    unselected = thumbnail_pixels(page, 0)

    wait_idle(page)
    first.click()
    summary.get_by_text("1 selected").wait_for(timeout=WAIT)  # the count follows each click
    first.locator('img[alt^="✓"]').wait_for(timeout=WAIT)
    page.mouse.move(0, 0)
    selected = thumbnail_pixels(page, 0)
    # Faded and grey when unselected, full colour with a green outline when selected.
    assert np.abs(selected - unselected).mean() > 25
    assert colourfulness(selected) > colourfulness(unselected) + 15
    edge = selected[2:4, selected.shape[1] // 2]  # a strip of the outline
    assert (edge[:, 1] > edge[:, 0] + 60).all() and (edge[:, 1] > edge[:, 2] + 60).all()
    # Clicking opens the image's measures in full beside the gallery.
    details = page.locator("#selection-details")
    details.get_by_text("Face distance to the reference").wait_for(timeout=WAIT)

    wait_idle(page)
    first.click()
    summary.get_by_text("0 selected").wait_for(timeout=WAIT)
    first.locator('img[alt^="○"]').wait_for(timeout=WAIT)
    page.mouse.move(0, 0)
    assert np.abs(thumbnail_pixels(page, 0) - unselected).mean() < 3  # back to the unselected look

    # Hovering shows the whole caption: distance and every flag, not an ellipsis.
    first.hover()
    label = first.locator(".caption-label")
    assert label.evaluate("e => getComputedStyle(e).whiteSpace") == "normal"
    assert "face d=" in label.inner_text()

    wait_idle(page)
    page.get_by_role("button", name="Quick-select 25").click()
    summary.get_by_text("25 selected").wait_for(timeout=WAIT)
    wait_idle(page)
    page.locator("#selection-gallery .thumbnail-item").nth(2).click()
    summary.get_by_text("24 selected").wait_for(timeout=WAIT)
    page.mouse.move(0, 0)
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=False)
    page.close()
    assert Image.open(shot).size == (1280, 1000)
    if os.environ.get("LORA_STUDIO_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "assets" / "screenshot.png")


def test_an_error_leaves_the_gallery_as_it_was(browser, sheet_app):
    studio, url, cid = sheet_app
    items = studio.characters.images(cid, "sheet")
    studio.selection.set_selection(cid, [i.id for i in items[:20]])
    page = open_tab(browser, url, "3 · Selection")
    summary, thumbnails = page.locator("#selection-summary"), page.locator("#selection-gallery .thumbnail-item")
    summary.get_by_text("20 selected").wait_for(timeout=WAIT)
    wait_idle(page)  # the tab's own refresh has finished
    # Behind the page's back the last image leaves the sheet (another tab, another user): clicking it fails.
    record = studio.store.get("images", items[-1].id)
    studio.store.delete("images", [items[-1].id])
    try:
        thumbnails.nth(29).click()
        page.locator("#selection-message").get_by_text("not part of this character's sheet").wait_for(timeout=WAIT)
        assert thumbnails.count() == 30  # every image is still shown...
        assert "Error" not in page.locator("#selection-gallery").inner_text()  # ...with no error placeholder
        assert summary.get_by_text("20 selected").is_visible()
        # The next good click clears the message and works as usual.
        wait_idle(page)
        thumbnails.nth(25).click()
        summary.get_by_text("21 selected").wait_for(timeout=WAIT)
        assert page.locator("#selection-message").inner_text().strip() == ""
    finally:
        studio.store.insert("images", record)
        page.close()


def save_steps_as_preset(page, steps: str, name: str) -> None:
    """On the Training tab: type the steps, save the form as a preset, wait for the confirmation."""
    field = page.locator("#training-steps input")
    field.fill(steps)
    field.press("Tab")
    page.get_by_text("Save these settings as a preset").click()
    page.locator("#preset-name textarea, #preset-name input").first.fill(name)
    page.get_by_role("button", name="Save preset").click()
    page.get_by_text("Saved preset").wait_for(timeout=WAIT)


def test_a_saved_preset_reloads_after_an_app_restart(browser, tmp_path):
    workspace = tmp_path / "ws"
    with running_app(workspace) as (_, url):
        page = open_tab(browser, url, "4 · Training")
        save_steps_as_preset(page, "123", "Quick 123")
        page.locator("#training-preset").get_by_text("Quick 123").wait_for(timeout=WAIT)
        page.close()
    assert (workspace / "presets.json").is_file()

    with running_app(workspace) as (_, url):  # a new process of the app on the same workspace
        page = open_tab(browser, url, "4 · Training")
        preset, steps = page.locator("#training-preset"), page.locator("#training-steps input")
        preset.get_by_text("Quick 123").wait_for(timeout=WAIT)
        page.wait_for_function("() => document.querySelector('#training-steps input').value === '123'",
                               timeout=WAIT)  # the form itself was remembered too
        preset.get_by_text("Beginner").click()
        page.wait_for_function("() => document.querySelector('#training-steps input').value === '1000'",
                               timeout=WAIT)
        preset.get_by_text("Quick 123").click()
        page.wait_for_function("() => document.querySelector('#training-steps input').value === '123'",
                               timeout=WAIT)
        assert steps.input_value() == "123"
        page.close()


def test_the_page_opens_after_a_poisoned_preference(browser, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "preferences.json").write_text('{"tester.prompt": "x \\ud800 y", "character": "c1"}')
    with running_app(workspace) as (_, url):
        page = open_tab(browser, url, "5 · Strength tester")
        banner = page.locator("#engine-banner")
        banner.get_by_text("set aside").wait_for(timeout=WAIT)
        assert "preferences.json" in banner.inner_text()
        assert "Error" not in page.locator("#character").inner_text()
        assert page.get_by_text("Connection to the server was lost").count() == 0
        page.close()


def test_a_visitor_keeps_their_presets_and_choices_in_their_own_browser(browser, tmp_path):
    workspace = tmp_path / "ws"
    with running_app(workspace, host="0.0.0.0") as (_, url):  # a shared launch: nobody here is the owner
        alice = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = alice.new_page()
        page.goto(url, wait_until="load")
        page.locator("#engine-banner").wait_for(timeout=WAIT)
        settle(page)
        page.get_by_role("tab", name="4 · Training").click()
        settle(page)
        save_steps_as_preset(page, "123", "Alice 123")
        settle(page)
        page.close()
        again = alice.new_page()  # her browser, a new page
        again.goto(url, wait_until="load")
        again.locator("#engine-banner").wait_for(timeout=WAIT)
        settle(again)
        again.get_by_role("tab", name="4 · Training").click()
        again.locator("#training-preset").get_by_text("Alice 123").wait_for(timeout=WAIT)
        again.wait_for_function("() => document.querySelector('#training-steps input').value === '123'",
                                timeout=WAIT)
        alice.close()
        bob = browser.new_context(viewport={"width": 1280, "height": 1000})  # another visitor: none of it reaches his page
        other = bob.new_page()
        other.goto(url, wait_until="load")
        other.locator("#engine-banner").wait_for(timeout=WAIT)
        settle(other)
        other.get_by_role("tab", name="4 · Training").click()
        settle(other)
        assert other.locator("#training-preset").get_by_text("Alice 123").count() == 0
        assert other.locator("#training-steps input").input_value() != "123"
        bob.close()
    assert not (workspace / "presets.json").exists() and not (workspace / "preferences.json").exists()
