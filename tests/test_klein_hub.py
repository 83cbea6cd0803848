"""FLUX.2 [klein] from a (fake) Hub: the catalogue's rows say licence and access, the 4 B repos download with
no token, the 9 B ones ask for one, and what lands in the cache loads as the flavour its index names."""
from __future__ import annotations

import pytest

from lora_studio.engines.family import KLEIN, KLEIN_4B, KLEIN_9B, KLEIN_BASE_4B, flavour_for
from lora_studio.errors import StudioError
from tests.fake_hub import klein_hub


@pytest.fixture
def hub(klein_repo_folders, tmp_path, monkeypatch):
    with klein_hub(klein_repo_folders, monkeypatch, tmp_path / "hf-home") as fake:
        fake.add_token("hf_with_access", "ada", access={KLEIN_9B})
        yield fake


def test_the_catalogue_rows_say_licence_access_and_the_planned_memory(hub, models):
    rows = {row.repo_id: row for row in models.catalogue()}
    four, nine = rows[KLEIN_4B], rows[KLEIN_9B]
    assert (four.licence, four.gated) == ("Apache-2.0", False) and "no token needed" in four.note
    assert (nine.licence, nine.gated) == ("FLUX Non-Commercial License", True) and "token" in nine.note
    assert rows["black-forest-labs/FLUX.1-dev"].gated is True
    assert four.need_gb < nine.need_gb < rows["black-forest-labs/FLUX.1-dev"].need_gb  # counted from each model
    assert four.download_bytes > 0 and four.status == "not downloaded"
    paths = {f.path for f in models.listing(KLEIN_4B).files}
    assert {"model_index.json", "tokenizer/tokenizer.json", "text_encoder/config.json"} <= paths
    assert "README.md" not in paths and "flux-2-klein.safetensors" not in paths  # root files stay on the Hub


def test_klein_4b_downloads_without_a_token_and_loads_as_the_distilled_flavour(hub, studio, models):
    assert models.token_status().user is None
    for repo_id in (KLEIN_4B, KLEIN_BASE_4B):
        done = studio.jobs.wait(models.start_download(repo_id).id, timeout=120)
        assert done.status == "succeeded", done.error
        assert models.describe(repo_id).status == "on disk"
    distilled, base = flavour_for(KLEIN_4B), flavour_for(KLEIN_BASE_4B)  # read from the cached model_index.json
    assert (distilled.family, distilled.distilled) == (KLEIN, True) and (base.family, base.distilled) == (KLEIN, False)

    import numpy as np
    import torch
    from diffusers import Flux2KleinPipeline

    served = hub.bytes_served(KLEIN_4B)
    pictures = []
    for repo_id in (KLEIN_4B, KLEIN_BASE_4B):
        pipe = Flux2KleinPipeline.from_pretrained(repo_id)  # from the cache the download filled
        pipe.set_progress_bar_config(disable=True)
        assert pipe.config.is_distilled is (repo_id == KLEIN_4B)
        pictures.append(pipe(prompt="ohwx", height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                             max_sequence_length=32, generator=torch.Generator().manual_seed(0),
                             output_type="np").images[0])
    assert np.abs(pictures[0] - pictures[1]).max() > 0.05  # two checkpoints, two different transformers
    assert hub.bytes_served(KLEIN_4B) == served  # nothing fetched again


def test_klein_9b_asks_for_a_token_first(hub, studio, models):
    with pytest.raises(StudioError) as refused:
        models.start_download(KLEIN_9B)
    assert "https://huggingface.co/settings/tokens" in str(refused.value)
    models.login("hf_with_access")
    done = studio.jobs.wait(models.start_download(KLEIN_9B).id, timeout=120)
    assert done.status == "succeeded", done.error


def test_the_first_run_button_takes_over_a_download_whose_process_died(hub, studio, models):
    """A Klein download left 'running' by a process that died while this app ran is not waited on forever:
    the first-run button takes it over (same job, its bytes kept) and queues the base beside it."""
    from lora_studio.job_holders import FOLDER
    from lora_studio.services.job_params import DownloadParams
    from lora_studio.typed_json import to_json

    dead = "0" * 32  # a process that died and left its unlocked lock file behind
    (studio.store.root / "jobs" / FOLDER / f"{dead}.lock").write_text("1\n")
    left = studio.store.insert("jobs", dict(kind="download", status="running", holder=dead, title="Download",
                                            params=to_json(DownloadParams(KLEIN_4B, then_use=KLEIN_4B))))
    assert studio.jobs.orphaned(left["id"])
    jobs, sentence = models.start_default()
    assert [j.params["repo_id"] for j in jobs] == [KLEIN_4B, KLEIN_BASE_4B] and jobs[0].id == left["id"]
    assert all(studio.jobs.wait(j.id, timeout=120).status == "succeeded" for j in jobs)
    assert "Downloading" in sentence
