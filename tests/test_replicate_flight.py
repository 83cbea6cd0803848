"""Many Replicate predictions in flight together, against the fake Replicate whose predictions take
wall-clock time like a GPU's: the sheet in a fraction of 30 predictions' time, one upload, images under
their own slots, the cap exact, Stop leaving nothing running, a failing image reported alone, 429s
ridden out."""
from __future__ import annotations

import hashlib
import threading
import time

import pytest
from PIL import Image

from lora_studio.config import ReplicateSettings, Settings
from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest
from lora_studio.engines.flight import open_flight
from lora_studio.engines.replicate.client import RateLimited, retry_after
from lora_studio.engines.replicate.engine import ReplicateEngine
from lora_studio.engines.replicate.predictions import Pacing, ridden_out
from lora_studio.progress import SpendingCapReached
from lora_studio.services.costs import CostService
from lora_studio.services.sheet import SheetOptions
from lora_studio.services.sheet_prompts import SHEET_PROMPTS
from lora_studio.studio import Studio
from tests.fake_replicate import FakeReplicate
from tests.photo_engine import PhotoEngine

TOKEN = "r8_flight_SECRET"
LATENCY = 2.0  # seconds each fake prediction takes (the fixed overheads are small beside it)


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)


def spread(inputs: dict) -> float:
    """0.8–1.2 × LATENCY, later slots faster: within a round they finish in the reverse of the sheet's order."""
    slot = int(inputs.get("seed", 1000)) % 1000 % 30
    return LATENCY * (1.2 - 0.4 * slot / 29)


def studio_on(fake, tmp_path, engine=None, **replicate) -> Studio:
    settings = Settings(engine="replicate", workspace=tmp_path / "ws", replicate=ReplicateSettings(
        base_url=fake.url, destination="me/mila", trainer_version="v1", **replicate))
    return Studio(settings, engine=engine)


def character(studio, reference) -> str:
    made = studio.characters.create("Mila")
    studio.characters.add_images(made["id"], [reference])
    return made["id"]


def creates(fake):
    return [r for r in fake.find("POST", r"/predictions$") if r.injected is None]


# --------------------------------------------------------------------------- the sheet


def test_thirty_variations_take_a_fraction_of_thirty_predictions_with_one_upload(tmp_path, image_file):
    with FakeReplicate(token=TOKEN, prediction_latency=spread) as fake, studio_on(fake, tmp_path) as studio:
        character_id = character(studio, image_file)
        estimate = studio.sheet.estimate(character_id, SheetOptions(gate=False))
        one = studio.costs.table()["kontext"].seconds
        assert estimate.seconds == pytest.approx(4 * one) and "8 at once" in estimate.text()  # 30 in rounds of 8
        done = studio.wait(studio.sheet.start(character_id, SheetOptions(gate=False)).id, 120)
        assert done.outputs["generated"] == 30 and fake.served() == 30
        first_request, last_image = fake.requests[0].at, fake.find("GET", r"^/outputs/")[-1].at
        wall = last_image - first_request
        assert wall < 30 * LATENCY / 4, wall  # one after another takes 60 s; only 8 at once fits in 15
        assert fake.peak_running == 8  # up to N at once, never more
        assert len(fake.find("POST", r"^/v1/files$")) == 1  # the reference, uploaded once
        assert all(r.prefer == "wait=10" for r in creates(fake))  # sync mode: the answer carries the output
        assert not fake.find("GET", r"^/v1/predictions/")  # so no polling at all
        finish_order = [j.input["seed"] for j in sorted(fake.created("prediction"), key=lambda j: j.completed_at)]
        assert finish_order != sorted(finish_order)  # they finished out of order...
        items = studio.characters.images(character_id, "sheet")
        rows = {r["id"]: r for r in studio.store.find("images", kind="sheet")}
        assert [rows[i.id]["slot"] for i in items] == [p.slot for p in SHEET_PROMPTS]  # ...and sit in sheet order
        for item, prompt in zip(items, SHEET_PROMPTS):  # each image is its own slot's: the fake paints seed, prompt
            red, _, blue = Image.open(item.path).getpixel((0, 0))
            assert (red, blue) == ((1000 + prompt.slot) * 37 % 256, hashlib.sha256(prompt.prompt.encode()).digest()[0])
        assert "Done: 30 generated" in done.message


def test_a_cap_that_allows_ten_calls_stops_at_ten_with_eight_at_once(tmp_path, image_file):
    with FakeReplicate(token=TOKEN, prediction_latency=0.3) as fake, studio_on(fake, tmp_path) as studio:
        character_id = character(studio, image_file)
        price = studio.costs.table()["kontext"].usd
        done = studio.jobs.wait(studio.sheet.start(character_id, SheetOptions(gate=False, max_usd=10.5 * price)).id, 60)
        assert done.status == "canceled" and "spending cap" in done.message
        assert fake.served() == 10 and len(studio.characters.images(character_id, "sheet")) == 10
        assert done.outputs["spending"]["paid_calls"] == 10
        assert done.outputs["spending"]["usd"] == pytest.approx(10 * price)


def test_stop_with_eight_in_flight_leaves_none_running(tmp_path, image_file):
    with FakeReplicate(token=TOKEN, prediction_latency=60.0) as fake:
        settings = ReplicateSettings(base_url=fake.url)
        engine = ReplicateEngine(settings, sync_wait=1)  # a stop waits at most this long for an id
        with studio_on(fake, tmp_path, engine=engine) as studio:
            character_id = character(studio, image_file)
            job = studio.sheet.start(character_id, SheetOptions(gate=False))
            _until(lambda: fake.served() == 8)
            studio.jobs.cancel(job.id)
            done = studio.jobs.wait(job.id, 30)
            assert done.status == "canceled"
            assert fake.running() == [] and fake.served() == 8  # every one canceled, none started after
            assert sorted(fake.canceled) == sorted(j.id for j in fake.created("prediction"))
            assert studio.characters.images(character_id, "sheet") == []


def test_polls_beyond_the_sync_wait_do_not_multiply_with_the_predictions_in_flight(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.1")
    with FakeReplicate(token=TOKEN, prediction_latency=2.0) as fake:
        engine = ReplicateEngine(ReplicateSettings(base_url=fake.url, parallel=8), sync_wait=1)
        started = time.monotonic()
        with open_flight(engine) as flight:
            for seed in range(8):
                flight.submit(seed, GenerateRequest(prompt=f"p{seed}", seed=seed))
            images = {done.key: done.image for done in flight.results()}
        wall = time.monotonic() - started
        assert {seed: image.getpixel((0, 0))[0] for seed, image in images.items()} == {i: i * 37 % 256 for i in range(8)}
        assert all(r.prefer == "wait=1" for r in creates(fake))
        polls = len(fake.find("GET", r"^/v1/predictions/"))
        assert polls <= wall / 0.1 + 8  # one poll turn per interval for all of them, not one each


def test_one_prediction_failing_twice_leaves_29_images_and_says_which(tmp_path, image_file):
    bad = SHEET_PROMPTS[5]
    with FakeReplicate(token=TOKEN, prediction_latency=0.2,
                       fail_if=lambda inputs: inputs.get("seed") == 1000 + bad.slot) as fake, \
            studio_on(fake, tmp_path) as studio:
        character_id = character(studio, image_file)
        done = studio.wait(studio.sheet.start(character_id, SheetOptions(gate=False)).id, 60)
        assert done.outputs["generated"] == 29 and done.outputs["failed"] == [bad.label]
        assert f"1 failed twice on the engine ({bad.label})" in done.message
        assert any(bad.label in line and "tried twice with the same seed" in line and "FAIL" in line
                   for line in done.logs)
        tries = [j for j in fake.created("prediction") if j.input["seed"] == 1000 + bad.slot]
        assert len(tries) == 2 and tries[0].input == tries[1].input  # retried once, same seed
        assert len(studio.characters.images(character_id, "sheet")) == 29
        fake.fail_if = None  # the next run makes only the missing one
        again = studio.wait(studio.sheet.start(character_id, SheetOptions(gate=False)).id, 60)
        assert again.outputs["generated"] == 1 and len(studio.characters.images(character_id, "sheet")) == 30


def test_a_429_storm_is_ridden_out(tmp_path, image_file):
    with FakeReplicate(token=TOKEN, prediction_latency=0.2) as fake, studio_on(fake, tmp_path) as studio:
        character_id = character(studio, image_file)
        fake.inject(429, "slow down", method="POST", path_prefix="/v1/models/", times=25, retry_after="0.1")
        fake.inject(429, "slow down", method="POST", path_prefix="/v1/files", times=3, retry_after="0.1")
        done = studio.wait(studio.sheet.start(character_id, SheetOptions(gate=False)).id, 120)
        assert done.outputs["generated"] == 30 and fake.served() == 30
        assert len([r for r in fake.find("POST", r"/predictions$") if r.injected == 429]) == 25


def test_gate_retries_join_the_flight(tmp_path, astronaut_path):
    """The fake draws no faces: with the gate on each variation is tried again while the others run."""
    with FakeReplicate(token=TOKEN, prediction_latency=0.3) as fake, studio_on(fake, tmp_path) as studio:
        character_id = character(studio, astronaut_path)
        done = studio.wait(studio.sheet.start(character_id, SheetOptions(max_tries=2, slots=(0, 1, 2, 3))).id, 60)
        assert done.outputs["retried"] == {"no face": 4} and fake.served() == 8
        assert fake.peak_running >= 4
        assert len(fake.find("POST", r"^/v1/files$")) == 1


# --------------------------------------------------------------------------- pieces


def test_a_429_waits_as_long_as_retry_after_says(monkeypatch):
    with FakeReplicate(token=TOKEN, prediction_latency=0.05) as fake:
        engine = ReplicateEngine(ReplicateSettings(base_url=fake.url))
        fake.inject(429, "slow down", method="POST", path_prefix="/v1/models/", times=2, retry_after="1")
        engine.generate(GenerateRequest(prompt="x"))
        sent = [r.at for r in fake.find("POST", r"/predictions$")]
        assert len(sent) == 3 and sent[1] - sent[0] >= 1.0 and sent[2] - sent[1] >= 1.0


def test_retry_after_and_patience():
    assert retry_after({"Retry-After": "7"}) == 7 and retry_after({"Retry-After": "0.5"}) == 0.5
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # a date gone by: go now
    assert retry_after({}) is None and retry_after({"Retry-After": "soon"}) is None
    assert retry_after({"Retry-After": "86400"}) == 60  # never an hour-long stall

    def always_limited():
        raise RateLimited(30.0)

    with pytest.raises(EngineError, match="rate-limiting"):
        ridden_out(always_limited, "editing", Pacing(), threading.Event(), patience=10)


def test_the_meter_holds_each_price_before_the_call_starts(tmp_path):
    meter = CostService(tmp_path, paid=True).meter(2.5 * 0.025)  # two Kontext edits fit
    holds = [meter.reserve("kontext"), meter.reserve("kontext")]
    with pytest.raises(SpendingCapReached, match="2 more running"):
        meter.reserve("kontext")  # nothing is spent yet, but two are running
    meter.settle(holds[0], paid=False, seconds=1.0)  # one failed: its hold is given back
    meter.settle(meter.reserve("kontext"), paid=True, seconds=1.0)
    meter.settle(holds[1], paid=True, seconds=1.0)
    assert meter.summary()["paid_calls"] == 2 and meter.held == 0


def test_the_local_engine_keeps_its_edits_per_call(astronaut_path):
    class Counting(PhotoEngine):
        edit_batch = 3

        def __init__(self, photo):
            super().__init__(photo, side=64)
            self.calls = []

        def edit_many(self, requests):
            self.calls.append(len(requests))
            return super().edit_many(requests)

    engine = Counting(astronaut_path)
    reference = Image.open(astronaut_path)
    with open_flight(engine) as flight:
        assert flight.parallel == 1
        for seed in range(4):
            flight.submit(seed, EditRequest(image=reference, prompt="x", seed=seed))
        done = list(flight.results())
    assert engine.calls == [3, 1] and [d.key for d in done] == [0, 1, 2, 3]


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
