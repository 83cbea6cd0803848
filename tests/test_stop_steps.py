"""Stop means stop, through the running app's API (gradio_client), on a tiny Flux whose every step
takes a while (tests/slow_engine.py): Stop during an image, a sheet variation, an identity-gate retry,
a strength-sweep cell and a training step ends the job `canceled` within one step, keeps what was
finished, and the next job runs. /job_status shows each step as it goes."""
from __future__ import annotations

import re
import time

import pytest
from gradio_client import Client

from tests.app_server import running_app
from tests.conftest import noise_image
from tests.slow_engine import slow_tiny_engine

pytestmark = pytest.mark.slow
PACE = 0.2  # seconds a transformer call takes: 0.8 s an image of 4 steps


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    engine, steps = slow_tiny_engine(PACE)
    with running_app(tmp_path_factory.mktemp("stop") / "ws", engine_object=engine) as (studio, url):
        yield studio, Client(url, verbose=False), engine, steps


@pytest.fixture
def slow(app):
    _, _, engine, steps = app
    steps.pace = PACE
    yield steps
    steps.pace, engine.makes_noise = PACE, True


def poll(client, job_id, until, timeout=240, seen=None):
    """/job_status until `until(job)` holds (or the job ends); each message seen goes into `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.predict(job_id, api_name="/job_status")
        if seen is not None:
            seen.append((job["status"], job["progress"], job["message"]))
        if until(job) or job["done"]:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: never {until}")


def stop_mid_step(client, job_id, steps, when, seen=None):
    """Wait for `when(message)`, ask for the stop, wait for the end: (final job, steps run past the stop)."""
    job = poll(client, job_id, lambda j: j["status"] == "running" and when(j["message"]), seen=seen)
    assert not job["done"], job
    at = steps.forwards
    client.predict(job_id, api_name="/cancel_job")
    done = poll(client, job_id, lambda j: False, seen=seen)
    return done, steps.forwards - at


def mid(pattern: str):
    """A progress message in the middle of a pass (steps matching `pattern`, from its start)."""
    return lambda message: re.match(pattern, message) is not None


def next_job_runs(studio, client) -> None:
    with studio.jobs.gate.hold("the GPU lane is still held"):
        pass  # an engine switch would not be refused now
    job = client.predict("after the stop", api_name="/generate")
    assert poll(client, job["id"], lambda j: False)["status"] == "succeeded"


def test_stop_during_an_image_ends_it_at_the_next_step(app, slow):
    studio, client, _, _ = app
    job = client.predict("a slow picture", api_name="/generate")
    seen = []
    done, past = stop_mid_step(client, job["id"], slow, mid(r"step [23]/4 · "), seen)
    assert done["status"] == "canceled" and "image" not in done["outputs"], done
    assert past <= 1  # the step under way (or one begun just before the stop), never the rest
    running = [(p, m) for s, p, m in seen if s == "running" and "s/step" in m]
    assert running and all("~" in m and " left" in m for _, m in running)
    assert 0 < running[0][0] < 1  # the bar moves with the steps of a one-image job
    next_job_runs(studio, client)


def test_stop_during_a_sheet_variation_keeps_the_finished_ones(app, slow, image_file):
    studio, client, _, _ = app
    character = studio.characters.create("Slow sheet")
    studio.characters.add_images(character["id"], [image_file])
    job = client.predict(character["id"], False, 1, api_name="/start_sheet")
    done, past = stop_mid_step(client, job["id"], slow, mid(r"2/30 variations done · step [123]/4"))
    assert done["status"] == "canceled" and past <= 1, done
    kept = studio.store.find("images", character_id=character["id"], kind="sheet")
    assert 2 <= len(kept) <= 3 and all(studio.store.path(r["path"]).is_file() for r in kept)
    resumed = client.predict(job["id"], api_name="/resume_job")  # the same job goes on after the kept ones
    going = poll(client, resumed["id"], lambda j: any("Resuming" in line for line in j["logs"]))
    assert any(f"Resuming: {len(kept)} variations already exist" in line for line in going["logs"])
    client.predict(job["id"], api_name="/cancel_job")
    assert poll(client, job["id"], lambda j: False)["status"] == "canceled"
    next_job_runs(studio, client)


def test_stop_during_an_identity_gate_retry_keeps_the_closest_try(app, slow, astronaut_path):
    from lora_studio.services.sheet import SheetOptions

    studio, client, engine, _ = app
    engine.makes_noise = False  # the gate is on: tiny's noise has no face, so the variation is drawn again
    character = studio.characters.create("Gate")
    studio.characters.add_images(character["id"], [astronaut_path])
    job = studio.sheet.start(character["id"], SheetOptions(gate=True, max_tries=3, slots=(1,)))
    poll(client, job.id, lambda j: any("trying again" in line for line in j["logs"]))
    done, past = stop_mid_step(client, job.id, slow, mid(r".* · step [123]/4"))
    assert done["status"] == "canceled" and past <= 1, done
    kept = studio.store.find("images", character_id=character["id"], kind="sheet")
    assert [(r["slot"], r["tries"]) for r in kept] == [(1, 1)]  # the finished first try, not lost
    next_job_runs(studio, client)


def test_stop_during_a_sweep_cell_keeps_the_cells_made(app, slow, tmp_path):
    from tests.lora_factory import make_tiny_lora

    studio, client, _, _ = app
    studio.library.import_file(make_tiny_lora(tmp_path / "mila.safetensors", seed=1), "slowmila")
    job = client.predict("slowmila", "photo of mila", "0.6, 1.2", "1, 2", api_name="/run_sweep")
    done, past = stop_mid_step(client, job["id"], slow, mid(r"2/6 images done · step [123]/4"))
    assert done["status"] == "canceled" and past <= 1, done
    cells = done["outputs"]["cells"]
    assert 2 <= len(cells) <= 3 and done["outputs"]["grid"]  # a partial grid of what was drawn
    next_job_runs(studio, client)


def test_stop_during_training_ends_at_the_next_step(app, slow, tmp_path):
    from lora_studio.services.datasets import dataset_from_folder

    studio, client, _, _ = app
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        noise_image(i, 64).save(folder / f"{i}.png")
    dataset = dataset_from_folder(studio.store, sorted(folder.glob("*.png")), "mila_v1")
    job = client.predict(dataset["id"], "slowlora", "mila_v1", "Beginner", 60, 4, 1e-3, api_name="/start_training")
    done, past = stop_mid_step(client, job["id"], slow, mid(r"step ([3-9]|[1-4][0-9])/60 · "))
    assert done["status"] == "canceled" and past <= 1, done
    assert any("Canceled at step" in line and "to resume from" in line for line in done["logs"])
    next_job_runs(studio, client)
