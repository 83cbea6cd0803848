"""Generate's size, steps and guidance: the family's defaults within the engine's bound, checked at the door,
the same through the Python API, the named endpoint, the CLI and the page (Chromium)."""
from __future__ import annotations

import pytest
from gradio_client import Client
from PIL import Image

from lora_studio.errors import InvalidInput
from lora_studio.services import limits
from lora_studio.services.generate import GenerateOptions, family_defaults, fit_form
from tests.app_server import running_app
from tests.hostile_kit import refused, unchanged
from tests.test_browser import WAIT, browser, open_tab, settle  # noqa: F401 (browser is a fixture)


def test_flux1_draws_at_its_own_sizes_within_each_engines_bound():
    flux = family_defaults("flux1")
    local = fit_form(flux, limits.LOCAL, 1024)
    assert (local.width, local.height, local.steps, local.guidance) == (1024, 1024, 28, 3.5)
    assert local.sizes == flux.sizes and local.multiple == 16 and local.min_side == 64
    assert local.max_pixels == 2048 * 1024 and local.max_steps == 100 and local.drawn_steps is None
    tiny = fit_form(flux, limits.TINY, 64)  # the family's shapes at the tiny engine's scale
    assert (tiny.width, tiny.height) == (64, 64) and (64, 48) in tiny.sizes and (48, 64) in tiny.sizes
    assert all(w % 16 == 0 and h % 16 == 0 and max(w, h) <= 256 for w, h in tiny.sizes)
    assert tiny.steps == 4 == tiny.drawn_steps  # what the tiny engine runs, said, not 28 that it would cut
    assert fit_form(flux, limits.REPLICATE, 1024).max_side == 1440
    with pytest.raises(Exception, match="family"):
        family_defaults("sdxl")


def test_sizes_are_bounded_by_side_multiple_and_pixels():
    assert limits.image_size(1344, 768, limits.LOCAL, 64, 16) == (1344, 768)
    for width, height, words in ((2048, 2048, "4.19 MP; this engine draws at most 2.10 MP"),
                                 (1000, 1024, "Width 1000 does not fit; give a multiple of 16"),
                                 (48, 1024, "Width 48 is out of range; give a whole number from 64"),
                                 (1024, "tall", "Height 'tall' is not a whole number")):
        with pytest.raises(InvalidInput, match=words):
            limits.image_size(width, height, limits.LOCAL, 64, 16)


def test_left_out_values_are_the_familys_and_given_ones_are_drawn(studio):
    job = studio.generator.start(GenerateOptions(prompt="a cat"))
    assert {k: job.params[k] for k in ("width", "height", "steps", "guidance")} == {
        "width": 64, "height": 64, "steps": 4, "guidance": 3.5}
    image = studio.generate("a cat", width=80, height=48, steps=2, guidance=5.0, seed=1)
    assert image.size == (80, 48)
    done = studio.jobs.list("generate")[-1]
    assert (done.params["steps"], done.params["guidance"]) == (2, 5.0)
    with unchanged(studio.store.root):
        for kwargs, words in (({"width": 272}, "Width 272 is out of range"), ({"guidance": 10.5}, "Guidance"),
                              ({"steps": 51}, "Steps 51 is out of range")):
            with pytest.raises(InvalidInput, match=words):
                studio.generator.start(GenerateOptions(prompt="x", **kwargs))


def test_the_endpoint_takes_size_steps_and_guidance_and_says_its_form(tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):
        client = Client(url, verbose=False)
        form = client.predict(api_name="/generate_form")
        assert form["width"] == 64 and [64, 48] in form["sizes"] and form["max_side"] == 256
        job = client.predict("a cat", "", 3, "", False, 80, 48, 2, 4.5, api_name="/generate")
        assert {k: job["params"][k] for k in ("width", "height", "steps", "guidance")} == {
            "width": 80, "height": 48, "steps": 2, "guidance": 4.5}
        done = studio.jobs.wait(job["id"], 120)
        assert done.status == "succeeded" and Image.open(studio.store.path(done.outputs["image"])).size == (80, 48)
        plain = client.predict("a cat", api_name="/generate")  # left out: the family's
        assert (plain["params"]["width"], plain["params"]["steps"], plain["params"]["guidance"]) == (64, 4, 3.5)
        assert studio.jobs.wait(plain["id"], 120).status == "succeeded"  # a running job writes its progress
        with unchanged(studio.store.root):
            refused(client, "Width 250 does not fit", "a cat", "", 0, "", False, 250, 64, api_name="/generate")
            refused(client, "Guidance 11 is out of range", "a cat", "", 0, "", False, 0, 0, 0, 11,
                    api_name="/generate")


def test_the_cli_takes_steps_and_guidance(capsys, tmp_path):
    import json

    from lora_studio.cli import main

    out = tmp_path / "cat.png"
    assert main(["generate", "--prompt", "a cat", "--width", "48", "--height", "80", "--steps", "2",
                 "--guidance", "4", "--out", str(out), "--json", "--workspace", str(tmp_path / "ws")]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["image"] == str(out) and Image.open(out).size == (48, 80)
    assert main(["generate", "--prompt", "a cat", "--steps", "500", "--json", "--workspace", str(tmp_path / "ws")]) == 1
    assert "Steps 500 is out of range" in capsys.readouterr().out


def test_an_engine_switch_gives_the_form_the_new_bounds(studio):
    from lora_studio.ui.library_tab import form_bounds

    kept = form_bounds(studio, 48, 32, 2, 5.0)
    assert kept.width["maximum"] == 256 and "value" not in kept.width and "value" not in kept.steps
    studio.generator.limits = limits.LOCAL  # as after a switch to the local engine
    studio.generator.image_size = 1024
    moved = form_bounds(studio, 48, 32, 2, 5.0)  # too small for FLUX.1 on a GPU
    assert moved.width["maximum"] == 2048 and moved.width["value"] == 1024 and moved.height["value"] == 1024
    assert "value" not in moved.steps and "value" not in moved.guidance  # still within the new bounds
    assert ("1344 × 768", "1344x768") in moved.size["choices"] and moved.size["value"] == "1024x1024"
    assert "value" not in kept.size


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_picks_a_size_and_draws_at_it(browser, tmp_path):  # noqa: F811
    with running_app(tmp_path / "ws") as (studio, url):
        page = open_tab(browser, url, "Library & generate")
        width, height = page.locator("#generate-width input[type=number]"), page.locator("#generate-height input[type=number]")
        assert (width.input_value(), height.input_value()) == ("64", "64")
        assert "at most 4 steps" in page.locator("#generate-steps").inner_text()
        page.locator("#generate-size input").click()
        page.get_by_role("option", name="80 × 48").click()
        page.wait_for_function("() => document.querySelector('#generate-width input[type=number]').value === '80'",
                               timeout=WAIT)
        assert height.input_value() == "48"
        steps = page.locator("#generate-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        settle(page)
        page.get_by_role("button", name="Generate", exact=True).click()
        page.locator(".ls-job[data-status='succeeded']").wait_for(timeout=WAIT * 4)
        job = studio.jobs.list("generate")[-1]
        assert (job.params["width"], job.params["height"], job.params["steps"]) == (80, 48, 2)
        assert Image.open(studio.store.path(job.outputs["image"])).size == (80, 48)
        page.close()
