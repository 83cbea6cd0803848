"""In a real Chromium: the character sheet's panel shows each step as it is drawn, and its Stop button
ends the job at the next step, keeping the variations already made (tiny Flux with slow steps)."""
from __future__ import annotations

import re

import pytest

from tests.app_server import running_app
from tests.slow_engine import slow_tiny_engine
from tests.test_browser import WAIT, browser, open_tab  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STEP = re.compile(r"(\d+)/30 variations done · step [1-3]/4 · [\d.]+ s/step · ~\d+ s left")


def test_the_sheet_panel_shows_steps_and_stop_ends_the_job_at_the_next_one(browser, tmp_path, image_file):  # noqa: F811
    engine, steps = slow_tiny_engine(pace=0.3)
    with running_app(tmp_path / "ws", engine_object=engine) as (studio, url):
        character = studio.characters.create("Slow")
        studio.characters.add_images(character["id"], [image_file])
        page = open_tab(browser, url, "2 · Character sheet")
        page.get_by_role("button", name="Generate character sheet").click()
        panel = page.locator("#sheet-progress .ls-job")
        page.wait_for_function(
            """pattern => { const el = document.querySelector('#sheet-progress .ls-job');
                            return el && new RegExp(pattern).test(el.innerText)
                                   && !el.innerText.startsWith('0/30') }""",
            arg=STEP.pattern.replace("(\\d+)", "[1-9]\\d*"), timeout=WAIT * 2)
        shown = panel.inner_text()
        assert STEP.search(shown), shown
        asked, cancel = [], studio.jobs.cancel
        studio.jobs.cancel = lambda job_id, **kw: (asked.append(steps.forwards), cancel(job_id, **kw))[1]
        page.get_by_role("button", name="Stop", exact=True).click()
        page.locator("#sheet-progress .ls-job[data-status='canceled']").wait_for(timeout=WAIT)
        assert asked and steps.forwards - asked[0] <= 1  # from the stop's arrival: the step under way at most
        (job,) = studio.jobs.list("sheet")
        assert job.status == "canceled"
        kept = studio.store.find("images", character_id=character["id"], kind="sheet")
        assert kept and int(STEP.search(shown).group(1)) <= len(kept)
        page.close()
