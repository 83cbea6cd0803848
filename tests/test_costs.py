"""Cost before you click: the price table, estimates, and the per-job cap, against the fake Replicate."""
from __future__ import annotations

import json

import pytest

from lora_studio.config import ReplicateSettings, Settings
from lora_studio.jobs import UserError
from lora_studio.progress import SpendingCapReached
from lora_studio.services.costs import DEFAULT_PRICES, CostService, duration, parse_cap, spending_text
from lora_studio.services.generate import GenerateOptions
from lora_studio.services.sheet import SheetOptions
from lora_studio.services.tester import SweepRequest
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio
from tests.fake_replicate import serving

TOKEN = "r8_costs_SECRET"


# --------------------------------------------------------------------------- the table and estimates


def test_estimates_read_one_table_with_its_source_and_date(tmp_path):
    costs = CostService(tmp_path, paid=True)
    kontext, trainer = costs.table()["kontext"], costs.table()["trainer"]
    sheet = costs.sheet(30, max_tries=3)
    assert (sheet.calls, sheet.calls_max) == (30, 90)
    assert sheet.usd == pytest.approx(30 * kontext.usd) and sheet.usd_max == pytest.approx(90 * kontext.usd)
    assert sheet.seconds == pytest.approx(30 * kontext.seconds)
    assert kontext.source in sheet.text() and kontext.date in sheet.text() and "up to 90" in sheet.text()
    training = costs.training(1000)
    assert training.calls == 1
    assert training.seconds == pytest.approx(trainer.fixed_seconds + 1000 * trainer.seconds)
    assert training.usd == pytest.approx(training.seconds * trainer.usd)
    sweep = costs.sweep(15, 3)
    table = costs.table()
    assert sweep.calls == 18 and sweep.usd == pytest.approx(15 * table["lora"].usd + 3 * table["plain"].usd)
    assert CostService(tmp_path, paid=False).sheet(30) is None  # nothing is paid on a local engine


def test_edited_prices_persist_are_bounded_and_reset(tmp_path):
    costs = CostService(tmp_path, paid=True)
    costs.save([{"key": "kontext", "usd": "0.05", "seconds": 4, "source": "my invoice", "date": "2026-01"}])
    again = CostService(tmp_path, paid=True).table()["kontext"]  # what a restarted app reads
    assert (again.usd, again.seconds, again.source, again.date) == (0.05, 4.0, "my invoice", "2026-01")
    assert CostService(tmp_path, paid=True).sheet(10).usd == pytest.approx(0.5)
    for bad in ({"key": "kontext", "usd": -1}, {"key": "kontext", "usd": "lots"}, {"key": "kontext", "usd": "nan"},
                {"key": "dinner", "usd": 1}):
        with pytest.raises(UserError):
            costs.save([bad])
    assert costs.table()["kontext"].usd == 0.05  # a refused edit changes nothing
    (tmp_path / "replicate_prices.json").write_text(json.dumps({"prices": {"kontext": {"usd": "x"}, "lora": 5}}))
    assert costs.table()["kontext"].usd == DEFAULT_PRICES[0].usd  # a damaged row falls back to the default
    costs.reset()
    assert not (tmp_path / "replicate_prices.json").exists()


@pytest.mark.parametrize("row, words", [
    ({"key": "kontext", "usd": 0}, "from 0.0025"), ({"key": "trainer", "usd": 1e6}, "a hundred times"),
    ({"key": "lora", "usd": "1e400"}, "from"), ({"key": "lora", "seconds": -1}, "seconds"),
    ({"key": "lora", "fixed_seconds": 1e9}, "fixed_seconds"),
    ({"key": "lora", "source": "[cheap](https://evil.example)"}, "plain text"),
    ({"key": "lora", "source": "<img src=x onerror=alert(1)>"}, "plain text"),
    ({"key": "lora", "source": "see https://evil.example"}, "plain text"),
    ({"key": "lora", "source": "x \ud800 y"}, "not valid Unicode"), ({"key": "lora", "date": "2025\n07"}, "control"),
    ({"key": "lora", "source": "s" * 201}, "201 characters")])
def test_prices_that_could_be_turned_against_the_user_are_refused(tmp_path, row, words):
    costs = CostService(tmp_path, paid=True)
    with pytest.raises(UserError, match=words):
        costs.save([row])
    assert not (tmp_path / "replicate_prices.json").exists()


def test_the_meter_never_divides_by_a_price_and_charges_at_least_the_floor(tmp_path):
    from lora_studio.services.costs import LOWEST_SHARE, Meter, PriceTable, Price

    zero = PriceTable({p.key: Price(**{**p.__dict__, "usd": 0.0}) for p in DEFAULT_PRICES})  # a table made by hand
    meter = Meter(zero, cap_usd=1.0, paid=True)
    floor = DEFAULT_PRICES[3].usd * LOWEST_SHARE
    assert meter.seconds_left("trainer") == pytest.approx(1.0 / floor)
    calls = 0
    with pytest.raises(SpendingCapReached):
        while calls < 10_000:
            meter.call("lora", lambda: None)
            calls += 1
    assert calls == int(1.0 / (DEFAULT_PRICES[1].usd * LOWEST_SHARE) + 1e-9)  # 312 calls, not 10,000


def test_cap_parsing_and_texts():
    assert parse_cap("") is None and parse_cap(0) is None and parse_cap("2.5") == 2.5
    for bad in ("abc", -1, float("inf"), 1e9):
        with pytest.raises(UserError):
            parse_cap(bad)
    assert duration(42) == "42 s" and duration(125) == "2 min 05 s" and duration(7260) == "2 h 01 min"
    assert spending_text(None) == ""
    text = spending_text({"paid_calls": 4, "measured_s": 61, "usd": 0.1, "cap_usd": 0.1, "stopped_at_cap": True})
    assert "4 paid calls" in text and "1 min 01 s" in text and "cap $0.10, reached" in text


def test_the_meter_stops_before_the_call_that_would_pass_the_cap(tmp_path):
    meter = CostService(tmp_path, paid=True).meter(0.06)  # Kontext at $0.025: two calls fit, a third does not
    made = [meter.call("kontext", lambda: "image") for _ in range(2)]
    with pytest.raises(SpendingCapReached, match=r"cap of \$0.06"):
        meter.call("kontext", pytest.fail)  # never called
    assert made == ["image", "image"] and meter.summary()["paid_calls"] == 2 and meter.summary()["stopped_at_cap"]
    free = CostService(tmp_path, paid=False).meter(0.01)
    assert [free.call("kontext", lambda: 1) for _ in range(5)] == [1] * 5 and free.summary()["paid_calls"] == 0


# --------------------------------------------------------------------------- against the fake Replicate


@pytest.fixture
def fake(monkeypatch):
    with serving(monkeypatch, TOKEN, prediction_polls=1, training_polls=2) as server:
        yield server


def replicate_studio(tmp_path, fake) -> Studio:
    return Studio(Settings(engine="replicate", workspace=tmp_path / "ws", replicate=ReplicateSettings(
        base_url=fake.url, destination="me/mila", trainer_version="v1")))


@pytest.mark.slow  # a sheet on the fake Replicate
def test_a_capped_sheet_stops_before_the_paid_call_that_would_pass_it_and_keeps_its_images(
        tmp_path, fake, astronaut_path):
    with replicate_studio(tmp_path, fake) as studio:
        character = studio.characters.create("Mila")
        studio.characters.add_images(character["id"], [astronaut_path])
        price = studio.costs.table()["kontext"].usd
        job = studio.sheet.start(character["id"], SheetOptions(gate=False, max_usd=4.5 * price))
        assert job.params["estimate"]["calls"] == 30 and job.params["estimate"]["usd"] == pytest.approx(30 * price)
        done = studio.jobs.wait(job.id, 120)
        assert done.status == "canceled" and "spending cap" in done.message
        assert fake.served("prediction") == 4  # the 5th call would pass the cap: it was never sent
        assert len(studio.characters.images(character["id"], "sheet")) == 4  # what was paid for is kept
        spending = done.outputs["spending"]
        assert spending["paid_calls"] == 4 and spending["stopped_at_cap"] and spending["measured_s"] > 0
        assert spending["usd"] == pytest.approx(4 * price)
        # Starting again without a cap continues where the cap stopped it.
        estimate = studio.sheet.estimate(character["id"], SheetOptions(gate=False))
        assert estimate.calls == 26
        again = studio.wait(studio.sheet.start(character["id"], SheetOptions(gate=False)).id, 300)
        assert again.outputs["generated"] == 26 and again.outputs["spending"]["paid_calls"] == 26
        assert fake.served("prediction") == 30


def test_training_is_refused_over_its_cap_and_stopped_on_replicate_when_it_runs_past_it(tmp_path, fake):
    with replicate_studio(tmp_path, fake) as studio:
        dataset = _dataset(studio, tmp_path)
        with pytest.raises(UserError, match="expected to cost"):
            studio.training.start(dataset, TrainOptions(name="m", trigger="mila_v1", steps=1000, max_usd=0.5))
        assert fake.served("training") == 0 and not fake.find("POST", r"^/v1/files$")
        # A run that takes longer than its estimate is canceled on Replicate once the cap is spent.
        studio.costs.save([{"key": "trainer", "usd": 0.15, "seconds": 0, "fixed_seconds": 0}])  # the highest allowed
        fake.training_polls = 10_000
        job = studio.training.start(dataset, TrainOptions(name="m", trigger="mila_v1", steps=50, max_usd=0.2))
        done = studio.jobs.wait(job.id, 60)
        assert done.status == "canceled" and "spending cap" in done.message
        [training] = fake.created("training")
        assert fake.canceled == [training.id]
        spending = done.outputs["spending"]
        assert spending["stopped_at_cap"] and spending["paid_calls"] == 1  # billed while it ran, then stopped
        # Billed from when the run left "starting" until it was stopped: past the cap, within the measured time.
        assert 0.2 <= spending["usd"] <= 0.15 * spending["measured_s"] + 0.01
        assert not studio.library.list()


def test_a_capped_sweep_keeps_a_partial_grid_and_the_tester_never_uses_go_fast(tmp_path, fake):
    with replicate_studio(tmp_path, fake) as studio:
        _remote_lora(studio)
        table = studio.costs.table()
        cap = 2 * table["plain"].usd + 2 * table["lora"].usd + 0.001  # the no-LoRA row and two LoRA images
        job = studio.tester.start(SweepRequest(lora="mila", prompt="photo of mila_v1", strengths=(0.5, 1.0),
                                               seeds=(1, 2), max_usd=cap))
        assert job.params["go_fast"] is False and job.params["estimate"]["calls"] == 6
        done = studio.jobs.wait(job.id, 120)
        assert done.status == "canceled" and fake.served("prediction") == 4
        assert len(done.outputs["cells"]) == 4 and done.outputs["grid"].endswith("grid.png")
        inputs = fake.prediction_inputs()
        assert all(i["go_fast"] is False for i in inputs)
        # Started together, so in any order: the cap held the first four asked for (base row, then 0.5).
        applied = [j.applied.get("lora_scale") for j in fake.created("prediction") if "lora_weights" in j.input]
        assert applied == [0.5, 0.5]  # the strength swept is the strength applied


def test_generation_sends_and_records_go_fast_and_the_fake_applies_the_1_5_rule(tmp_path, fake):
    with replicate_studio(tmp_path, fake) as studio:
        _remote_lora(studio)
        slow = studio.wait(studio.generator.start(GenerateOptions(prompt="p", loras={"mila": 0.8})).id, 60)
        fast = studio.wait(studio.generator.start(GenerateOptions(prompt="p", loras={"mila": 0.8}, go_fast=True)).id, 60)
        assert slow.params["go_fast"] is False and slow.outputs["go_fast"] is False
        assert fast.params["go_fast"] is True and fast.outputs["applied_strengths"] == [pytest.approx(1.2)]
        off, on = fake.created("prediction")
        assert (off.input["go_fast"], on.input["go_fast"]) == (False, True)
        assert off.applied["lora_scale"] == 0.8 and on.applied["lora_scale"] == pytest.approx(1.2)
        assert slow.outputs["spending"]["paid_calls"] == 1


def test_the_fake_defaults_go_fast_on_like_replicate(fake):
    import replicate

    client = replicate.Client(api_token=TOKEN, base_url=fake.url)
    client.models.predictions.create(model="black-forest-labs/flux-dev-lora",
                                     input={"prompt": "x", "lora_weights": "me/a:1", "lora_scale": 1.0})
    [job] = fake.created("prediction")
    job = client.predictions.get(job.id)
    job.wait()
    [created] = fake.created("prediction")
    assert created.applied == {"go_fast": True, "lora_scale": 1.5}  # a call that forgets go_fast is 1.5x strong


def _remote_lora(studio) -> dict:
    """A LoRA trained on Replicate, as the library records it (weights live at a URL)."""
    from lora_studio.store import new_id

    return studio.store.insert("loras", dict(id=new_id("lora_"), name="mila", trigger="mila_v1", source="replicate",
                                             path="loras/none/lora.safetensors",
                                             remote="https://example.invalid/mila.safetensors"))


def _dataset(studio, tmp_path) -> str:
    from lora_studio.services.datasets import dataset_from_folder
    from tests.conftest import noise_image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        noise_image(i, 64).save(folder / f"{i}.png")
    return dataset_from_folder(studio.store, sorted(folder.glob("*.png")), "mila_v1")["id"]


def test_the_settings_table_round_trips_through_the_editor(tmp_path):
    from lora_studio.ui.settings_prices import EDITABLE, price_frame

    with Studio(Settings(engine="replicate", workspace=tmp_path), start=False) as studio:
        frame = price_frame(studio).astype(object)
        assert list(frame["key"]) == ["kontext", "lora", "plain", "trainer"]
        frame.loc[frame["key"] == "lora", "usd"] = "0.04"  # edited cells come back as text
        frame.loc[frame["key"] == "lora", "source"] = float("nan")  # an emptied cell
        studio.costs.save([{k: r[k] for k in ("key", *EDITABLE)} for r in frame.to_dict("records")])
        lora = studio.costs.table()["lora"]
        assert lora.usd == 0.04 and lora.source == DEFAULT_PRICES[1].source
