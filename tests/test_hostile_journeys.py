"""Two people on one link at once (what already held in issue 10, kept held): each drives their own
character, dataset, LoRA and images through the running app in parallel, and nothing of one shows
up in the other's. A kill -9 in the middle of work is covered by test_training_restart.py (the
training resumes to the same weights) and test_store.py (the database survives).
"""
from __future__ import annotations

import threading
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.app_server import running_app
from tests.hostile_kit import character_with_sheet
from tests.lora_factory import make_tiny_lora

pytestmark = pytest.mark.slow


def pixels(root, job) -> np.ndarray:
    return np.asarray(Image.open(root / job["outputs"]["image"]))


def wait(client, job_id):
    import time

    while True:
        job = client.predict(job_id, api_name="/job_status")
        if job["done"]:
            return job
        time.sleep(0.2)


def test_two_journeys_at_once_without_cross_talk(tmp_path, astronaut_path):
    with running_app(tmp_path / "ws", concurrency=4) as (studio, url):
        root = studio.store.root
        people = {}
        for n, who in enumerate(("ann", "bob")):
            cid, sheet = character_with_sheet(studio, who, astronaut_path)
            lora = make_tiny_lora(tmp_path / f"{who}.safetensors", seed=10 + n)
            people[who] = dict(cid=cid, sheet=sheet, lora=lora, trigger=f"{who}_v1", seed=7 + n)
        alone = {}
        for who, p in people.items():  # what each one gets when nobody else is there
            client = Client(url, verbose=False)
            client.predict(handle_file(str(p["lora"])), f"{who}-style", "", api_name="/import_lora")
            alone[who] = pixels(root, wait(client, client.predict(
                "portrait", f"{who}-style:1.0", p["seed"], "", api_name="/generate")["id"]))
        assert not np.array_equal(alone["ann"], alone["bob"])

        results, errors = {}, []

        def journey(who):
            p, client = people[who], Client(url, verbose=False)
            try:
                for image_id in p["sheet"][:21]:
                    client.predict(p["cid"], image_id, api_name="/toggle_image")
                client.predict(p["cid"], p["sheet"][0], api_name="/toggle_image")
                dataset = client.predict(p["cid"], p["trigger"], api_name="/export_dataset")
                images = [wait(client, client.predict("portrait", f"{who}-style:1.0", p["seed"], "",
                                                      api_name="/generate")["id"]) for _ in range(2)]
                archive = zipfile.ZipFile(client.predict(dataset["id"], api_name="/download_dataset"))
                results[who] = dict(dataset=dataset, images=images, archive=archive,
                                    selection=client.predict(p["cid"], api_name="/selection"))
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append((who, exc))

        threads = [threading.Thread(target=journey, args=(who,)) for who in people]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert errors == []
        for who, p in people.items():
            other = "bob" if who == "ann" else "ann"
            mine = results[who]
            assert sorted(mine["selection"]["selected"]) == sorted(p["sheet"][1:21])
            assert set(mine["dataset"]["image_ids"]) == set(p["sheet"][1:21])
            captions = [mine["archive"].read(n).decode() for n in mine["archive"].namelist() if n.endswith(".txt")]
            assert len(captions) == 20 and all(p["trigger"] in c and people[other]["trigger"] not in c
                                               for c in captions)
            for job in mine["images"]:
                assert job["status"] == "succeeded"
                assert np.array_equal(pixels(root, job), alone[who])  # their own LoRA, never the other's


def test_the_load_bench_runs_and_reports(capsys):
    """bench/load.py starts its own app and ends with `errors: N` (here, clicks only: no model)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "load.py"
    spec = importlib.util.spec_from_file_location("load_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--clients", "3", "--clicks", "4", "--images", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "12/12 served" in "\n".join(lines) and lines[-2:] == ["lost updates: 0", "errors: 0"]
