"""The whole journey on FLUX.2 [klein] through the running app's API, from a fresh workspace, with no FLUX.1
repo anywhere: the first-run card's download (fake hub, Klein repos open, no token) → the first image →
the sheet → quick-select → training (in the app's process, then in a worker) → a strength test on both
checkpoints → the export, whose files load where users take them.

The fake hub serves the tiny Klein under the real ids; distilled and base carry different transformer
weights, so the test can say which one drew a picture and which one a LoRA was trained on.
"""
from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from lora_studio.engines.family import KLEIN_4B, KLEIN_BASE_4B
from tests.app_server import running_app
from tests.fake_hub import klein_hub
from tests.test_app_e2e import wait_job

pytestmark = pytest.mark.slow
SIDE = 64


@pytest.fixture
def hub(klein_repo_folders, tmp_path, monkeypatch):
    with klein_hub(klein_repo_folders, monkeypatch, tmp_path / "hf-home") as fake:
        yield fake


def direct(distilled: bool, prompt: str, seed: int) -> np.ndarray:
    """What the tiny Klein flavour itself draws at the engine's defaults (4 steps distilled, 50 at 4 base)."""
    from lora_studio.engines.builtin.klein import build_tiny_klein

    pipe = build_tiny_klein(distilled)
    pipe.set_progress_bar_config(disable=True)
    steps, guidance = (4, 1.0) if distilled else (50, 4.0)
    image = pipe(prompt=prompt, width=SIDE, height=SIDE, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image, dtype=np.int16)


def downloaded(client, started: dict) -> None:
    for job_id in started["jobs"]:
        deadline = time.time() + 300
        while time.time() < deadline:
            report = client.predict(job_id, api_name="/download_progress")
            if report["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.2)
        assert report["status"] == "succeeded", report["message"]


def test_the_klein_journey_from_a_fresh_workspace(hub, tmp_path, astronaut_path):
    from diffusers import Flux2KleinPipeline
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux2_lora_to_diffusers
    from safetensors.torch import load

    from lora_studio.engines.builtin.klein import build_tiny_klein
    from lora_studio.services.training_jobs import TrainOptions
    from tests.lora_factory import make_tiny_lora

    with running_app(tmp_path / "ws", sheet_size=SIDE, device="cpu") as (studio, url):
        studio.models._gpu_bytes = lambda: None
        client = Client(url, verbose=False)
        root = studio.store.root

        # First run: the card's button downloads FLUX.2 [klein] 4B and its base (transformer only), no token,
        # and the app switches to it by itself once both are on disk.
        started = client.predict(api_name="/first_run_klein")
        assert len(started["jobs"]) == 2 and "switches to" in started["message"]
        downloaded(client, started)
        deadline = time.time() + 30
        while studio.settings.engine != "local" and time.time() < deadline:
            time.sleep(0.1)
        assert (studio.settings.engine, studio.settings.model) == ("local", KLEIN_4B)
        assert not any("FLUX.1" in path for _, path, _ in hub.requests)  # no FLUX.1 repo was ever asked for
        assert hub.bytes_served(KLEIN_BASE_4B) < hub.bytes_served(KLEIN_4B)  # the base's encoders stayed there

        # The first image: drawn by the distilled checkpoint at its 4 steps.
        job = wait_job(client, client.predict("photo of a woman", "", 5, "", api_name="/generate")["id"])
        assert job["status"] == "succeeded", job["error"]
        first = np.asarray(Image.open(root / job["outputs"]["image"]).convert("RGB"), dtype=np.int16)
        assert np.abs(first - direct(True, "photo of a woman", 5)).max() <= 1
        assert np.abs(first - direct(False, "photo of a woman", 5)).max() > 8

        # The sheet: 30 reference edits by the same pipeline, quick-select, a dataset.
        cid = client.predict("Mila", api_name="/create_character")["id"]
        client.predict(cid, [handle_file(str(astronaut_path))], api_name="/add_reference")
        job = wait_job(client, client.predict(cid, False, 1, api_name="/start_sheet")["id"], timeout=600)
        assert job["status"] == "succeeded", job["error"]
        assert len(studio.store.find("images", character_id=cid, kind="sheet")) == 30
        assert client.predict(cid, 25, api_name="/quick_select")["count"] == 25
        dataset = client.predict(cid, "mila_v1", api_name="/export_dataset")

        # Training in the app's process: on the base checkpoint, swapped in under the same encoders.
        job = client.predict(dataset["id"], "mila", "", "Beginner", 6, 4, 2e-3, 256, "auto",
                             api_name="/start_training")
        job = wait_job(client, job["id"], timeout=900)
        assert job["status"] == "succeeded", job["error"]
        record = client.predict(api_name="/list_loras")[0]
        meta = record["metadata"]
        assert (meta["family"], meta["base_model"]) == ("flux2-klein", KLEIN_BASE_4B)

        # ...and in an isolated worker process, which loads the same pair from the Hugging Face cache.
        worker = studio.training.start(dataset["id"], TrainOptions(name="mila-worker", trigger="mila_v1",
                                                                     preset="Beginner", steps=2, rank=4,
                                                                     resolution=256, train_on="isolated"))
        done = studio.jobs.wait(worker.id, timeout=900)
        assert done.status == "succeeded", done.error
        assert studio.library.resolve("mila-worker")["metadata"]["base_model"] == KLEIN_BASE_4B

        # A FLUX.1 LoRA is refused in words naming both families, at the library's door and at generate.
        flux1 = make_tiny_lora(tmp_path / "flux1.safetensors", seed=3)
        with pytest.raises(Exception, match=r"FLUX\.1 LoRA, and the model here is FLUX\.2 \[klein\]"):
            client.predict(handle_file(str(flux1)), "old style", "", api_name="/import_lora")

        # The strength tester: the same sweep on the distilled and the base checkpoint, side by side.
        job = client.predict("mila", "photo of mila_v1", "0, 1.0", "1, 2", "", 0, True, api_name="/run_sweep")
        job = wait_job(client, job["id"], timeout=900)
        assert job["status"] == "succeeded", job["error"]
        outputs = job["outputs"]
        assert set(outputs["checkpoints"]) == {"distilled", "base"}
        assert outputs["checkpoints"]["distilled"]["steps"] == 4 and outputs["checkpoints"]["base"]["steps"] == 50
        assert "Recommended strength by checkpoint: distilled" in outputs["comparison"]
        assert all((root / c["grid"]).is_file() for c in outputs["checkpoints"].values())

        # The export: the files users take elsewhere.
        with zipfile.ZipFile(client.predict(record["id"], api_name="/export_lora")) as archive:
            names = set(archive.namelist())
            card = archive.read("README.md").decode()
            diffusers_file, kohya_file = archive.read("lora.safetensors"), archive.read("lora_kohya.safetensors")
        assert {"lora.safetensors", "lora_kohya.safetensors", "README.md", "metadata.json"} <= names
        assert KLEIN_BASE_4B in card and "Apache-2.0" in card and KLEIN_4B in card
        pipe = build_tiny_klein(distilled=False)
        pipe.load_lora_weights(load(diffusers_file), adapter_name="mila")
        assert isinstance(pipe, Flux2KleinPipeline) and "mila" in pipe.get_list_adapters()["transformer"]
        kohya = load(kohya_file)
        assert _convert_kohya_flux2_lora_to_diffusers(kohya) and kohya == {}  # every key consumed
