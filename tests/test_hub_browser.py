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


DEV = "black-forest-labs/FLUX.1-dev"
# Each header's text as the lines the browser broke it into, the table's box and the advice column's.
LAYOUT = """() => {
  const table = document.querySelector('#model-table');
  const lines = th => {  // the distinct tops of the header's text (its sort buttons are not text)
    const walk = document.createTreeWalker(th, NodeFilter.SHOW_TEXT), tops = new Set();
    for (let node = walk.nextNode(); node; node = walk.nextNode()) {
      if (!node.textContent.trim() || node.parentElement.offsetParent === null) continue;
      const r = document.createRange(); r.selectNodeContents(node);
      for (const b of r.getClientRects()) if (b.width > 0) tops.add(Math.round(b.top));
    }
    return tops.size; };
  const heads = Object.fromEntries([...table.querySelectorAll('thead th')].map(th => [th.innerText.trim(), lines(th)]));
  const box = table.getBoundingClientRect(), advice = [...table.querySelectorAll('thead th')].pop().getBoundingClientRect();
  const viewport = table.querySelector('.virtual-table-viewport') || table;
  return {heads, right: box.right, adviceRight: advice.right, scrolls: viewport.scrollWidth > viewport.clientWidth + 1};
}"""
def table_says(page, text: str) -> None:
    """Until the table shows `text` (its hidden measuring copies do not count)."""
    page.wait_for_function("t => document.querySelector('#model-table').innerText.includes(t)", arg=text,
                           timeout=WAIT)


ERROR_BADGES = """() => [...document.querySelectorAll('[data-testid="status-tracker"] .error')]
                     .filter(e => e.offsetParent !== null).length"""


def test_the_table_fits_keeps_up_and_offers_the_download_as_the_engine(browser, tmp_path, monkeypatch):  # noqa: F811
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    folder = save_pipeline(build_tiny_flux(), tmp_path / "repo")
    with FakeHub() as fake:
        fake.add_repo(DEV, folder, gated=True)
        fake.add_token(TOKEN, "ada", access={DEV})
        point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        with running_app(tmp_path / "ws") as (studio, url):
            studio.models._gpu_bytes = lambda: None
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load")
            page.locator("#engine-banner").wait_for(timeout=WAIT)
            settle(page)
            page.get_by_role("tab", name="Settings").click()
            page.get_by_text("Models: downloads and the Hugging Face token").click()
            table_says(page, "gated")
            settle(page)
            layout = page.evaluate(LAYOUT)
            page.screenshot(path=str(tmp_path / "models-1400.png"), full_page=True)
            assert layout["heads"]["download"] == 1 and layout["heads"]["model"] == 1, layout  # no letter-by-letter
            assert not layout["scrolls"] and layout["adviceRight"] <= layout["right"] + 1, layout  # advice not cut

            box = page.get_by_label("Model: from the list")
            box.fill(DEV)
            box.press("Enter")
            settle(page)
            page.get_by_role("button", name="Download", exact=True).click()  # refused: no token yet
            page.locator("#models-notice").get_by_text("gated model").wait_for(timeout=WAIT)
            page.get_by_label("Hugging Face token").fill(TOKEN)
            page.get_by_role("button", name="Check and save").click()
            table_says(page, "not downloaded")  # the row asked again with the token
            settle(page)
            assert page.locator("#models-notice").inner_text().strip() == ""  # the next success clears it
            assert page.evaluate(ERROR_BADGES) == 0  # and no "Error" badge is left on any output

            page.get_by_role("button", name="Download", exact=True).click()
            page.locator("#download-progress [data-status='succeeded']").wait_for(timeout=WAIT * 2)
            table_says(page, "on disk")
            page.locator("#use-model").click()
            page.locator("#setup-status").get_by_text("Switch engine").wait_for(timeout=WAIT)
            model = page.locator("#setup-model textarea, #setup-model input").first
            assert model.input_value() == DEV
            assert page.locator("#setup-engine input[value='local']").is_checked()
            page.close()
