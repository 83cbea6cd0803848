"""A stranger on the shared link (issue 10), through the running app: every bad value is refused at
the door in words that say what to give instead, and the store and workspace stay as they were.

Findings 1, 2, 4, 6, 7, 8 (queue) and 10 here; file serving (5) and uploads (8) in
test_hostile_files.py, LoRA imports (3, 9) in test_hostile_lora.py, images in test_hostile_images.py,
full disks in test_faults.py.
"""
from __future__ import annotations

import errno
import threading
import time

import pytest
from gradio_client import Client

from lora_studio.images import ALLOWED_FORMATS, FORMAT_NAMES
from lora_studio.jobs import UserError
from lora_studio.services.generate import GenerateOptions
from tests.app_server import running_app
from tests.hostile_kit import character_with_sheet, dataset_for, raw_call, refused, unchanged

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, astronaut_path):
    with running_app(tmp_path_factory.mktemp("hostile") / "ws", concurrency=4) as (studio, url):
        dataset = dataset_for(studio, "Mila", astronaut_path)
        yield studio, url, Client(url, verbose=False), dataset


def train_args(dataset, name="mila", steps=8, rank=4, lr=1e-3, resolution=0, mode="auto"):
    return (dataset["id"], name, "", "Beginner", steps, rank, lr, resolution, mode)


# ---- 1. sizes, steps and ranks the engine cannot serve -------------------------------------------
@pytest.mark.parametrize("field, value, words", [
    ("resolution", 100000, "Resolution 100000 is out of range; give a whole number from 16 to 256"),
    ("resolution", 17, "Resolution"),
    ("steps", 20000, "Steps 20000 is out of range; give a whole number from 1 to 2000"),
    ("steps", -5, "Steps -5 is out of range"),
    ("rank", 1024, "Rank 1024 is out of range; give a whole number from 1 to 32"),
    ("rank", 12, "power of two"),
])
def test_training_numbers_beyond_the_engine_are_refused(app, field, value, words):
    studio, _, client, dataset = app
    with unchanged(studio.store.root):
        refused(client, words, *train_args(dataset, **{field: value}), api_name="/start_training")


def test_python_api_sizes_are_bounded_too(app):
    studio = app[0]
    with unchanged(studio.store.root):
        for kwargs, words in (({"width": 100000}, "Width 100000 is out of range"),
                              ({"height": 24}, "does not fit; give a multiple of 16"),
                              ({"steps": 10**6}, "Steps"), ({"guidance": float("inf")}, "Guidance")):
            with pytest.raises(UserError, match=words):
                studio.generator.start(GenerateOptions(prompt="x", **kwargs))


def test_jobs_queued_by_an_older_version_fail_in_words_and_listing_survives(tmp_path):
    """A 100000 px training and a 2^64 seed already in the store, plus a damaged record: the app
    starts, those jobs fail with a message, the next job runs and /list_jobs answers everyone."""
    from lora_studio.store import Store

    store = Store(tmp_path / "ws")
    base = dict(title="old", progress=0.0, message="Queued", error=None, logs=[], outputs={}, attempts=0)
    bad_train = store.insert("jobs", dict(base, kind="train", status="queued", params=dict(
        dataset_id="ds_gone", name="x", trigger="mila_v1", steps=10, rank=4, learning_rate=1e-3,
        resolution=100000, memory_mode="auto", checkpoint_every=1, sample_every=1, seed=0)))
    bad_seed = store.insert("jobs", dict(base, kind="generate", status="queued", params=dict(
        prompt="x", loras=[], seed=2**64, width=64, height=64, steps=4, guidance=3.5)))
    store.insert("jobs", dict(kind=7, status="weird", params="x", created="yesterday", logs=None))
    store.close()
    with running_app(tmp_path / "ws") as (studio, url):
        client = Client(url, verbose=False)
        assert "Resolution 100000 is out of range" in studio.jobs.wait(bad_train["id"], 120).error
        assert "Seed 18446744073709551616 is out of range" in studio.jobs.wait(bad_seed["id"], 120).error
        ok = client.predict("photo", "", 3, "", api_name="/generate")
        assert studio.jobs.wait(ok["id"], 300).status == "succeeded"
        jobs = client.predict("", api_name="/list_jobs")
        assert len(jobs) == 4 and any("damaged" in (j["error"] or "") for j in jobs)
        assert {j["status"] for j in jobs} <= {"failed", "succeeded"}


# ---- 2. failures in request threads speak plainly -------------------------------------------------
def test_a_full_disk_in_a_request_is_a_plain_message(app, monkeypatch):
    studio, _, client, _ = app

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(studio.store.root / "studio.json"))

    with unchanged(studio.store.root):
        monkeypatch.setattr(studio.store, "insert", full)
        message = refused(client, "disk is full", "Mila 2", api_name="/create_character")
        assert str(studio.store.root) not in message


# ---- 4 + 10. integers and numbers at the door --------------------------------------------------------
@pytest.mark.parametrize("seed, words", [
    (2**64, "Seed 18446744073709551616 is out of range; give a whole number from 0 to 4294967295"),
    (-1, "out of range"), (1.5, "not a whole number"), ("1e3", "not a whole number"), ("a", "not a whole number"),
    (True, "whole number"),
])
def test_bad_seeds_are_refused_before_anything_is_stored(app, seed, words):
    studio, _, client, _ = app
    listed = [job["id"] for job in client.predict("", api_name="/list_jobs")]
    with unchanged(studio.store.root):
        refused(client, words, "photo", "", seed, "", api_name="/generate")
    assert [job["id"] for job in client.predict("", api_name="/list_jobs")] == listed  # it answers; no job queued


@pytest.mark.parametrize("seeds, words", [
    ("1e3", "Seed '1e3' is not a whole number"), ("1, a", "Seed 'a' is not a whole number"),
    ("1,2,3,4,5,6,7", "7 seeds given; test at most 6"), ("", "at least one seed"),
    ("99999999999", "out of range"),
])
def test_sweep_seeds_are_checked_not_cut(app, seeds, words, tmp_path):
    from tests.lora_factory import make_tiny_lora

    studio, _, client, _ = app
    if not studio.library.list():
        studio.library.import_file(make_tiny_lora(tmp_path / "s.safetensors"), "style")
    with unchanged(studio.store.root):
        refused(client, words, "style", "photo", "0, 1", seeds, "", api_name="/run_sweep")


@pytest.mark.parametrize("mode, words", [
    ("bogus", "Unknown memory mode 'bogus'; choose one of auto, full"),
    ("nf4", "tiny engine runs in full precision"),
])
def test_memory_modes_are_refused_at_submit(app, mode, words):
    studio, _, client, dataset = app
    with unchanged(studio.store.root):
        refused(client, words, *train_args(dataset, mode=mode), api_name="/start_training")


def test_a_cuda_only_mode_is_refused_on_a_cpu_machine(tmp_path):
    """The local engine on a machine without CUDA: quantized bases are refused at submit, in words."""
    from types import SimpleNamespace

    from lora_studio.jobs import JobQueue
    from lora_studio.services import limits
    from lora_studio.services.training_jobs import TrainingService
    from lora_studio.store import Store

    engine = SimpleNamespace(manager=SimpleNamespace(device=SimpleNamespace(type="cpu")))
    store = Store(tmp_path)
    service = TrainingService(store, JobQueue(store), None, None, lambda: engine, tiny=False, image_size=1024,
                              engine_limits=limits.LOCAL)
    for mode in ("nf4", "8bit", "fp8"):
        with pytest.raises(UserError, match=f"Memory mode '{mode}' quantizes the base model and needs an NVIDIA GPU"):
            service.check_memory_mode(mode)
    assert service.check_memory_mode("checkpointing") == "checkpointing"


def test_not_a_number_learning_rate_is_refused_in_words(app):
    studio, url, client, dataset = app
    with unchanged(studio.store.root):
        refused(client, "Learning rate 'nan' is not a finite number; give a number from 0 to 0.01",
                *train_args(dataset, lr="nan"), api_name="/start_training")
        body = ('{"data": ["%s", "mila", "", "Beginner", 8, 4, NaN, 0, "auto", -1, 0]}' % dataset["id"]).encode()
        kind, message = raw_call(url, "start_training", body)
        assert kind == "error" and "Learning rate nan is not a finite number" in message
        for value in ("Infinity", "-1", "1e9"):
            body = ('{"data": ["%s", "mila", "", "Beginner", 8, 4, %s, 0, "auto", -1, 0]}' % (dataset["id"], value)).encode()
            kind, message = raw_call(url, "start_training", body)
            assert kind == "error" and "Learning rate" in message


def test_other_words_and_numbers_at_the_door(app):
    studio, _, client, dataset = app
    cid = dataset["character_id"]
    with unchanged(studio.store.root):
        refused(client, "Quick-select picks between 20 and 30", cid, "abc", api_name="/quick_select")
        refused(client, "Tries per variation", cid, True, 10**9, api_name="/start_sheet")
        refused(client, "identity gate must be true or false", cid, "maybe", 3, api_name="/start_sheet")
        refused(client, "prompt is 5001 characters long; keep it under 2000", "x" * 5001, "", 0, "",
                api_name="/generate")
        refused(client, "name is 61 characters long; keep it under 60", "x" * 61, api_name="/create_character")
        refused(client, "not a valid job id", "../../studio", api_name="/job_status")
        refused(client, "Image kind must be 'reference' or 'sheet'", cid, "../jobs", api_name="/character_images")
        refused(client, "13 strengths given", "style", "p", ",".join(["1"] * 13), "1", "", api_name="/run_sweep")


def test_the_unsupported_format_message_names_every_accepted_format():
    import io

    from lora_studio.images import ImageError, open_image
    from tests.conftest import noise_image

    buffer = io.BytesIO()
    noise_image().save(buffer, "ICO")
    with pytest.raises(ImageError) as info:
        open_image(buffer.getvalue())
    for name in (FORMAT_NAMES[f] for f in ALLOWED_FORMATS):
        assert name in str(info.value)


# ---- 6. read-modify-write is atomic ---------------------------------------------------------------
def test_parallel_toggles_keep_every_click(app, astronaut_path):
    studio, url, _, _ = app
    cid, ids = character_with_sheet(studio, "Toggles", astronaut_path)
    clients = [Client(url, verbose=False) for _ in range(4)]
    errors = []

    def clicks(k):
        try:
            for image_id in ids[5 * k:5 * k + 5]:
                clients[k].predict(cid, image_id, api_name="/toggle_image")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=clicks, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert sorted(studio.characters.get(cid)["selected"]) == sorted(ids[:20])


def test_parallel_sheet_clicks_start_one_job(app, astronaut_path):
    studio, url, _, _ = app
    character = studio.characters.create("Clicks")
    studio.characters.add_images(character["id"], [astronaut_path])
    clients = [Client(url, verbose=False) for _ in range(4)]
    ids = []
    with studio.engine().manager.lock:  # the job cannot draw meanwhile
        threads = [threading.Thread(target=lambda c=c: ids.append(
            c.predict(character["id"], False, 1, api_name="/start_sheet")["id"])) for c in clients]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert len(ids) == 4 and len(set(ids)) == 1
        studio.jobs.cancel(ids[0])
    assert studio.jobs.wait(ids[0], 300).status == "canceled"


# ---- 7. one name, one LoRA -------------------------------------------------------------------------
def test_names_are_unique_from_the_moment_a_training_is_queued(app, tmp_path):
    from tests.lora_factory import make_tiny_lora

    studio, _, client, dataset = app
    lock = studio.engine().manager.lock
    with lock:  # the worker waits on the model, so the training stays queued/running meanwhile
        first = client.predict(*train_args(dataset, name="Twin"), api_name="/start_training")
        with unchanged(studio.store.root):
            refused(client, "A training in the queue will save a LoRA named 'Twin'",
                    *train_args(dataset, name="twin"), api_name="/start_training")
            lora = make_tiny_lora(tmp_path / "twin.safetensors")
            from gradio_client import handle_file

            refused(client, "A training in the queue will save a LoRA named 'Twin'", handle_file(str(lora)), "TWIN",
                    "", api_name="/import_lora")
    done = studio.jobs.wait(first["id"], 600)
    assert done.status == "succeeded", done.error
    assert [r["name"] for r in studio.library.list()].count("Twin") == 1


def test_a_name_taken_while_training_runs_gets_a_suffix_and_says_so(app):
    studio, _, client, dataset = app
    with studio.engine().manager.lock:
        job = client.predict(*train_args(dataset, name="Race"), api_name="/start_training")
        # An older version's import, or a rename, took the name behind the reservation's back:
        studio.store.insert("loras", dict(name="race", path="loras/x/lora.safetensors", files={}, source="imported"))
    done = studio.jobs.wait(job["id"], 600)
    assert done.status == "succeeded", done.error
    assert done.outputs["lora_name"] == "Race (2)" and "was taken" in done.message


def test_lookups_never_pick_the_oldest_of_two_names(app):
    studio, _, client, _ = app
    for _ in range(2):  # what an older version could leave behind
        studio.store.insert("loras", dict(name="Dup", path="loras/x/lora.safetensors", files={}, source="imported"))
    refused(client, "2 LoRAs are named 'Dup'.*use an id", "Dup", "p", "1", "1", "", api_name="/run_sweep")
    refused(client, "2 LoRAs are named 'Dup'", "p", "dup:0.8", 1, "", api_name="/generate")


# ---- 8. the queue is bounded ------------------------------------------------------------------------
def test_the_queue_refuses_more_than_its_limit(app):
    studio, _, client, _ = app
    limit = studio.jobs.limits.for_kind("generate")
    submitted = []
    with studio.engine().manager.lock:  # the first job holds the worker: the rest wait in the queue
        try:
            submitted.append(client.predict("p", "", 0, "", api_name="/generate")["id"])
            while studio.jobs.get(submitted[0]).status == "queued":
                time.sleep(0.05)
            while len(submitted) <= limit:
                submitted.append(client.predict("p", "", len(submitted), "", api_name="/generate")["id"])
            with unchanged(studio.store.root):
                refused(client, f"{limit} generate jobs are already waiting \\(the limit is {limit}\\)", "p", "", 0, "",
                        api_name="/generate")
        finally:
            for job_id in submitted:
                studio.jobs.cancel(job_id)
    for job_id in submitted:
        assert studio.jobs.wait(job_id, 300).done
