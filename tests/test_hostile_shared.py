"""A stranger on the shared link, round two: every hidden event reached by its index over
/gradio_api/queue/join, as a browser does. Prices, caps and shared presets are the owner's; each
visitor's preferences and presets stay in their own browser; nothing one request stores can stop
the next start or reach another visitor's page."""
from __future__ import annotations

import json

import httpx
import pytest

from lora_studio.services.preset_store import PresetFields, PresetStore
from lora_studio.ui.owner import NOT_OWNER
from tests.app_server import running_app
from tests.hostile_kit import Browser, unchanged

SURROGATE = "x \ud800 y"
OWNER = ("owner", "s3cret-pw")
PRESET_FORM = [10, 4, 1e-3, 64, "auto", 0, None]  # steps, rank, learning rate, resolution, memory mode, cap, alpha


def price_table(**row) -> dict:
    base = {"key": "lora", "usd": 0.032, "seconds": 10, "fixed_seconds": 0, "source": "my invoice",
            "date": "2026-01"}
    base.update(row)
    return {"headers": list(base), "data": [list(base.values())]}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A launch others can reach (host 0.0.0.0 in the settings; bound to loopback here): no one logged in."""
    workspace = tmp_path_factory.mktemp("shared") / "ws"
    PresetStore(workspace, tiny=True, image_size=64).save(  # the owner's, saved where the app is started
        "Team", PresetFields(steps=20, rank=4, learning_rate=1e-3, resolution=64))
    with running_app(workspace, host="0.0.0.0", concurrency=4) as (studio, url):
        yield studio, url


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """A launch with --auth: whoever logs in is the owner."""
    workspace = tmp_path_factory.mktemp("owned") / "ws"
    with running_app(workspace, auth=OWNER, host="0.0.0.0") as (studio, url):
        yield studio, url


# ---- 1 and 3: the price table ---------------------------------------------------------------------
@pytest.mark.parametrize("row, words", [
    ({"source": SURROGATE}, "not valid Unicode"), ({"usd": 0}, "from 0.0032"), ({"usd": 1e6}, "hundred times"),
    ({"source": "[cheaper](https://evil.example)"}, "plain text"), ({"source": "<b>free</b>"}, "plain text"),
    ({"usd": "nan"}, "must be a number from")])
def test_the_owner_cannot_store_a_price_that_breaks_the_app_or_the_caps(owned, row, words):
    studio, url = owned
    page = Browser(url, login=OWNER)
    with unchanged(studio.store.root):
        assert words in page.refusal("save_prices", price_table(**row))
    assert page.outputs("save_prices", price_table())  # the same table with sane values is kept
    assert studio.costs.table()["lora"].source == "my invoice"
    page.outputs("reset_prices")
    page.close()


def test_a_visitor_changes_neither_prices_nor_resets_them(shared):
    studio, url = shared
    page = Browser(url)
    with unchanged(studio.store.root):
        assert page.refusal("save_prices", price_table(usd=0.01)) == NOT_OWNER
        assert page.refusal("reset_prices") == NOT_OWNER
    page.close()


# ---- 2: remembered preferences --------------------------------------------------------------------
def test_a_poisoned_preference_is_refused_and_nothing_is_stored(tmp_path):
    with running_app(tmp_path / "ws") as (studio, url):  # a private launch: choices go to the workspace
        page = Browser(url)
        with unchanged(studio.store.root):
            for name, value in (("remember_tester_prompt", SURROGATE), ("remember_generate_prompt", "a\x00b"),
                                ("remember_tester_seeds", "1" * 5000), ("remember_training_steps", 1e300)):
                page.outputs(name, value, {})
        page.outputs("remember_tester_prompt", "photo of mila_v1", {})
        assert json.loads((studio.store.root / "preferences.json").read_text()) == {
            "tester.prompt": "photo of mila_v1"}
        page.close()
    with running_app(tmp_path / "ws") as (studio, url):
        assert httpx.get(url, timeout=60).status_code == 200 and studio.moved == []


def test_a_visitors_preferences_live_in_their_browser_and_never_reach_another_page(shared):
    studio, url = shared
    alice, bob = Browser(url), Browser(url)
    with unchanged(studio.store.root):  # nothing a visitor chooses is written on the server
        [kept] = alice.outputs("remember_tester_prompt", "alice's secret prompt", {})
        assert kept == {"tester.prompt": "alice's secret prompt"}
        [kept] = alice.outputs("remember_tester_seeds", "1, 2", kept)
        [skipped] = alice.outputs("remember_tester_prompt", SURROGATE, kept)  # refused: the browser keeps its value
        assert "\\ud800" not in json.dumps(skipped)
        alice_page = alice.outputs("on_load", kept, [])
        bob_page = bob.outputs("on_load", {}, [])
        # A forged browser value is read by the same rules: unknown keys and bad values are dropped.
        forged = bob.outputs("on_load", {"tester.prompt": SURROGATE, "training.steps": 1e300, "evil": 1}, [])
    assert "alice's secret prompt" in json.dumps(alice_page)
    assert "alice's secret prompt" not in json.dumps(bob_page)
    assert "\\ud800" not in json.dumps(forged) and "1e+300" not in json.dumps(forged)
    assert not (studio.store.root / "preferences.json").exists()
    alice.close(), bob.close()


# ---- 4 and 5: presets -----------------------------------------------------------------------------
def test_presets_are_checked_for_this_engine_and_bounded_before_they_are_kept(owned):
    studio, url = owned
    page = Browser(url, login=OWNER)
    with unchanged(studio.store.root):
        for form, words in (([10, 4, 1e-3, 1e300, "auto", 0, None], "Resolution"),
                            ([10, 4, 1e-3, 1024, "auto", 0, None], "Resolution"),
                            ([10**30, 4, 1e-3, 64, "auto", 0, None], "Steps"),
                            ([10, 4, 1e-3, 64, "nf4", 0, None], "Memory mode"),
                            ([10, 4, 1e-3, 64, "auto", 0, 1e300], "Alpha")):
            assert words in page.refusal("keep_preset", "Huge", *form, [])
        for name in ("Stаndard", "ЅТАNDАRD", "x \ud800", "a\x00b", "x" * 41):
            assert "preset" in page.refusal("keep_preset", name, *PRESET_FORM, []).lower()
    page.close()


def test_a_visitor_cannot_touch_the_owners_presets_and_keeps_their_own(shared):
    studio, url = shared
    alice, bob = Browser(url), Browser(url)
    with unchanged(studio.store.root):
        assert NOT_OWNER in alice.refusal("drop_preset", "Team", "team", [])
        assert "owner" in alice.refusal("keep_preset", "TEAM", 30, 4, 1e-3, 64, "auto", 0, None, [])
        assert "built-in" in alice.refusal("drop_preset", "Standard", "Standard", [])
        own = []
        for i in range(50):  # fifty slots, in her own browser: the owner's file never grows
            choices, _, message, own = alice.outputs("keep_preset", f"Mine {i}", *PRESET_FORM, own)
        assert "At most 50" in alice.refusal("keep_preset", "One more", *PRESET_FORM, own)
        assert [c[0] if isinstance(c, list) else c for c in choices["choices"]][:4] == [
            "Beginner", "Standard", "Expert", "Team"]
        description, *values, _ = alice.outputs("apply_preset", "Mine 7", own)
        assert values[:4] == [10, 4, 1e-3, 64]
        # Bob's page never lists Alice's presets, and he cannot pick one by name.
        assert "Mine 7" not in json.dumps(bob.outputs("on_load", {}, []))
        refused = bob.refusal("apply_preset", "Mine 7", [])
        assert "Unknown preset" in refused or "not in the list of choices" in refused
        left = alice.outputs("drop_preset", "Mine 7", "", own)[-1]
        assert len(left) == 49 and "Mine 7" not in json.dumps(left)
    assert [p["name"] for p in json.loads((studio.store.root / "presets.json").read_text())["presets"]] == ["Team"]
    alice.close(), bob.close()


def test_the_logged_in_owner_saves_and_deletes_shared_presets(owned):
    studio, url = owned
    page = Browser(url, login=OWNER)
    page.outputs("keep_preset", "For everyone", *PRESET_FORM, [])
    assert "For everyone" in studio.training.presets()
    page.outputs("drop_preset", "For everyone", "", [])
    assert "For everyone" not in studio.training.presets()
    page.close()


@pytest.mark.parametrize("name, words", [(SURROGATE, "not valid Unicode"), ("Mi\x1bla", "control"),
                                         ("Mіla", "alphabets"), ("Mila\u202e", "control")])
def test_names_that_cannot_be_served_back_or_pass_for_another_are_refused(shared, name, words):
    studio, url = shared
    page = Browser(url)
    with unchanged(studio.store.root):
        assert words in page.refusal("create_character", name)
    page.close()


@pytest.mark.parametrize("forged", ["not a list", {"presets": 1}, [[1, 2]], [{"name": None}], [{"name": "x" * 10_000}],
                                    [{"name": "Ok", "steps": 10, "rank": 4, "learning_rate": 1e-3, "resolution": 64}] * 500])
def test_whatever_a_browser_sends_back_as_its_presets_is_read_by_the_rules(shared, forged):
    studio, url = shared
    page = Browser(url)
    with unchanged(studio.store.root):
        description, steps, *_ = page.outputs("apply_preset", "Standard", forged)
        assert description.startswith("Balanced") and steps == 1500
        choices, _, message, own = page.outputs("keep_preset", "Mine", *PRESET_FORM, forged)
        assert "Saved preset" in message and len(own) <= 2 and own[-1]["name"] == "Mine"
    page.close()
