"""Models from a (fake) Hugging Face Hub: listing, downloads as jobs that keep their bytes, gated repos
and the token, with the real huggingface_hub client on top of tests/fake_hub.py."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lora_studio.errors import StudioError
from tests.fake_hub import FakeHub, point_client_at, save_pipeline

OPEN, GATED, KONTEXT = "test/tiny-flux", "test/gated-flux", "test/tiny-kontext"
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="session")
def repo_folders(tmp_path_factory):
    from diffusers import FluxKontextPipeline

    from lora_studio.engines.builtin.tiny import build_tiny_flux, tiny_components

    root = tmp_path_factory.mktemp("repos")
    dev = save_pipeline(build_tiny_flux(), root / "dev")
    kontext = save_pipeline(FluxKontextPipeline(**tiny_components(seed=7)), root / "kontext")
    return dev, kontext


@pytest.fixture
def hub(repo_folders, tmp_path, monkeypatch):
    dev, kontext = repo_folders
    with FakeHub(page_size=7) as fake:
        fake.add_repo(OPEN, dev)
        fake.add_repo(GATED, dev, gated=True)
        fake.add_repo(KONTEXT, kontext)
        fake.add_token("hf_without_access", "bob")
        fake.add_token("hf_with_access", "ada", access={GATED})
        fake.env = point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def received(repo_id: str, count: int) -> None:
    """Wait until the downloader has written `count` partial bytes (bytes still in the socket when a
    job stops are lost, as in any download: the tests stop it on a byte boundary)."""
    from lora_studio.engines.hub.repo import repo_cache

    blobs = repo_cache(repo_id) / "blobs"
    for _ in range(1200):
        if sum(p.stat().st_size for p in blobs.glob("*.part")) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the downloader never wrote {count} bytes")


def needed(hub: FakeHub, repo_id: str) -> dict[str, int]:
    from lora_studio.engines.hub.repo import list_repo

    return {f.path: f.size for f in list_repo(repo_id).files}


def test_listing_counts_only_what_the_pipeline_loads(hub):
    from lora_studio.engines.hub.repo import list_repo

    repo = list_repo(OPEN)
    paths = {f.path for f in repo.files}
    assert "model_index.json" in paths and WEIGHTS in paths and "text_encoder_2/config.json" in paths
    assert "README.md" not in paths and "flux1-dev.safetensors" not in paths  # root checkpoints stay on the Hub
    assert repo.total == sum(len(hub.repos[OPEN].files[p]) for p in paths)
    kontext = list_repo(KONTEXT)
    assert kontext.is_kontext
    assert {f.path.split("/")[0] for f in kontext.files} == {"model_index.json", "transformer"}


def test_download_shows_bytes_then_the_local_engine_draws_from_it(hub, studio, models):
    job = models.start_download(OPEN)
    assert job.kind == "download" and job.params["total"] == sum(needed(hub, OPEN).values())
    done = studio.jobs.wait(job.id, timeout=120)
    assert done.status == "succeeded", done.error
    report = models.progress(job.id)
    assert report["bytes_done"] == report["bytes_total"] == job.params["total"]
    assert any("MB/s" in line or "on disk" in line for line in done.logs + [done.message])
    for path, size in needed(hub, OPEN).items():
        assert hub.served[(OPEN, path)] == size, path  # every needed byte once
    assert (OPEN, "flux1-dev.safetensors") not in hub.served
    served = hub.bytes_served(OPEN)
    assert models.describe(OPEN).status == "on disk"
    again = studio.jobs.wait(models.start_download(OPEN).id, timeout=60)
    assert again.status == "succeeded" and hub.bytes_served(OPEN) == served  # nothing fetched twice

    from lora_studio.engines.base import GenerateRequest
    from lora_studio.engines.local.engine import make_local_engine

    engine = make_local_engine(OPEN, None, "cpu", "auto")  # from_pretrained(id) finds it in the cache
    image = engine.generate(GenerateRequest(prompt="a test", width=32, height=32, steps=2, guidance=3.5, seed=1))
    assert image.size == (32, 32)
    assert hub.bytes_served(OPEN) == served  # loading asked the Hub for metadata at most, no byte again


def test_gated_repo_says_what_to_do_for_each_refusal(hub, studio, models):
    with pytest.raises(StudioError) as no_token:
        models.start_download(GATED)
    assert "https://huggingface.co/settings/tokens" in str(no_token.value)
    models.login("hf_without_access")
    assert models.token_status().user == "bob"
    with pytest.raises(StudioError) as no_access:
        models.start_download(GATED)
    text = str(no_access.value)
    assert f"https://huggingface.co/{GATED}" in text and "public gated repos" in text
    assert "hf_without_access" not in text
    models.login("hf_with_access")
    done = studio.jobs.wait(models.start_download(GATED).id, timeout=120)
    assert done.status == "succeeded", done.error
    assert models.describe(GATED).status == "on disk"


def test_token_is_checked_saved_overridden_and_forgotten(hub, models, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(StudioError, match="refused"):
        models.login("hf_unknown_token")
    assert models.token_status().user is None
    state = models.login("hf_with_access")
    assert state.user == "ada" and state.source == "file"
    assert open(constants.HF_TOKEN_PATH).read().strip() == "hf_with_access"  # huggingface_hub's own file
    monkeypatch.setenv("HF_TOKEN", "hf_without_access")
    state = models.token_status()
    assert state.user == "bob" and state.source == "environment" and "HF_TOKEN" in state.text()
    monkeypatch.delenv("HF_TOKEN")
    assert models.logout().user is None


def test_cancel_halfway_then_resume_fetches_no_byte_twice(hub, studio, models):
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 2)
    job = models.start_download(OPEN)
    assert hold.reached.wait(60)
    received(OPEN, size // 2)
    studio.jobs.cancel(job.id)
    hold.released.set()
    stopped = studio.jobs.wait(job.id, timeout=60)
    assert stopped.status == "canceled"
    assert models.describe(OPEN).status.startswith("partly on disk")
    done = studio.jobs.wait(models.resume(job.id).id, timeout=120)
    assert done.status == "succeeded", done.error
    assert hub.served[(OPEN, WEIGHTS)] == size
    assert (f"bytes={size // 2}-") in [r for _, p, r in hub.requests if p.endswith(WEIGHTS)]
    for path, count in needed(hub, OPEN).items():
        assert hub.served[(OPEN, path)] == count, path


def test_a_dropped_connection_resumes_within_the_job(hub, studio, models):
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hub.cut(OPEN, WEIGHTS, after=size // 3)
    done = studio.jobs.wait(models.start_download(OPEN).id, timeout=120)
    assert done.status == "succeeded", done.error
    assert hub.served[(OPEN, WEIGHTS)] == size
    assert sum(1 for m, p, _ in hub.requests if m == "GET" and p.endswith(WEIGHTS)) == 2


def test_a_disk_too_small_is_refused_before_any_weight_byte(hub, studio, models):
    models.free_space = lambda where: 1000  # the disk seam: what the cache's disk has free
    with pytest.raises(StudioError) as refused:
        models.start_download(OPEN)
    text = str(refused.value)
    total = sum(needed(hub, OPEN).values())
    assert f"needs {total / 1e6:.1f} MB more" in text and "0.0 MB free" in text and "HF_HOME" in text
    assert set(p for (_, p) in hub.served) <= {"model_index.json"}  # the index says what to count; no weights
    assert models.downloads() == []


def test_kontext_downloads_only_its_transformer(hub, studio, models):
    done = studio.jobs.wait(models.start_download(KONTEXT).id, timeout=120)
    assert done.status == "succeeded", done.error
    fetched = {p for (r, p) in hub.served if r == KONTEXT}
    assert fetched and all(p == "model_index.json" or p.startswith("transformer/") for p in fetched)
    index = json.loads(hub.repos[KONTEXT].files["model_index.json"])
    assert index["_class_name"] == "FluxKontextPipeline"


def test_a_restart_mid_download_resumes_in_the_new_process(hub, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from lora_studio.config import Settings
    from lora_studio.studio import Studio
    from tests.conftest import ROOT

    workspace = tmp_path / "ws"
    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 2)
    child = subprocess.Popen([sys.executable, "-m", "lora_studio", "models", "download", OPEN, "--workspace",
                              str(workspace)], cwd=ROOT, env={**os.environ, **hub.env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hold.reached.wait(120)
        received(OPEN, size // 2)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        hold.released.set()
        if child.poll() is None:
            child.kill()
    with Studio(Settings(workspace=workspace)) as studio:
        jobs = studio.models.downloads()
        assert len(jobs) == 1
        done = studio.jobs.wait(jobs[0].id, timeout=120)  # resumed by itself after the restart
        assert done.status == "succeeded", done.error
    assert hub.served[(OPEN, WEIGHTS)] == size
    for path, count in needed(hub, OPEN).items():
        assert hub.served[(OPEN, path)] == count, path


def test_cli_commands_beside_a_downloading_app_take_none_of_its_jobs(hub, studio, models):
    """`models list` (which the page suggests), `jobs` and even `models download` of the same repo, run
    on the workspace of an app mid-download: the app's download stays the app's, no byte is fetched
    twice and it finishes."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    size = len(hub.repos[OPEN].files[WEIGHTS])
    hold = hub.hold(OPEN, WEIGHTS, after=size // 2)
    job = models.start_download(OPEN)
    assert hold.reached.wait(60)
    received(OPEN, size // 2)
    try:
        for argv in (["models", "list"], ["jobs"], ["models", "download", OPEN]):
            run = subprocess.run([sys.executable, "-m", "lora_studio", *argv, "--json", "--workspace",
                                  str(studio.store.root)], cwd=ROOT, env={**os.environ, **hub.env},
                                 capture_output=True, text=True, timeout=300)
            record = studio.store.get("jobs", job.id)
            assert record["status"] == "running" and record["holder"] == studio.jobs.holder.token, argv
        assert run.returncode == 1 and "already being downloaded" in json.loads(run.stdout)["error"]
        assert len(studio.store.find("jobs")) == 1
    finally:
        hold.released.set()
    done = studio.jobs.wait(job.id, timeout=120)
    assert done.status == "succeeded", done.error
    for path, count in needed(hub, OPEN).items():
        assert hub.served[(OPEN, path)] == count, path  # nothing fetched twice


def test_three_simultaneous_starts_of_one_download_make_one_job(hub, studio, models):
    import threading

    barrier, answers = threading.Barrier(3), []

    def start():
        barrier.wait()
        try:
            answers.append(models.start_download(OPEN).id)
        except StudioError as exc:
            answers.append(str(exc))

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(models.downloads()) == 1
    assert sum("already being downloaded" in a for a in answers) == 2
    assert studio.jobs.wait(models.downloads()[0].id, timeout=120).status == "succeeded"


def test_a_model_that_cannot_load_says_how_to_get_it(hub):
    from huggingface_hub import hf_hub_download

    from lora_studio.engines.base import GenerateRequest
    from lora_studio.engines.hub.repo import load_failure_text
    from lora_studio.engines.local.engine import make_local_engine

    with pytest.raises(OSError) as gated:  # the real client's refusal, as from_pretrained would meet it
        hf_hub_download(GATED, "model_index.json")
    assert "https://huggingface.co/settings/tokens" in load_failure_text(GATED, gated.value)
    engine = make_local_engine(GATED, None, "cpu", "auto")  # from_pretrained meets the gate: the fix in words
    with pytest.raises(StudioError) as failed:
        engine.generate(GenerateRequest(prompt="x", width=32, height=32, steps=1, guidance=3.5, seed=0))
    text = str(failed.value)
    assert "https://huggingface.co/settings/tokens" in text and f"https://huggingface.co/{GATED}" in text
    assert "already in your" not in text
    missing = make_local_engine("test/not-there", None, "cpu", "auto")
    with pytest.raises(StudioError) as failed:
        missing.generate(GenerateRequest(prompt="x", width=32, height=32, steps=1, guidance=3.5, seed=0))
    assert "models download test/not-there" in str(failed.value)


def test_a_download_does_not_wait_behind_gpu_work(hub, studio, models):
    import threading

    busy, release = threading.Event(), threading.Event()

    def gpu_work(params, reporter):  # stands for a training holding the one GPU worker
        busy.set()
        release.wait(120)
        return {}

    studio.jobs.register("hold_gpu", gpu_work)
    held = studio.jobs.submit("hold_gpu", {})
    assert busy.wait(60)
    try:
        done = studio.jobs.wait(models.start_download(OPEN).id, timeout=120)
        assert done.status == "succeeded" and studio.jobs.get(held.id).status == "running"
    finally:
        release.set()
    assert studio.jobs.wait(held.id, timeout=60).status == "succeeded"


def test_downloads_land_in_hf_hub_cache_and_a_weights_folder_is_used_as_it_is(hub, studio, models, repo_folders):
    from huggingface_hub import constants

    studio.jobs.wait(models.start_download(OPEN).id, timeout=120)
    assert (Path(constants.HF_HUB_CACHE) / "models--test--tiny-flux" / "refs" / "main").read_text() == \
        hub.repos[OPEN].sha
    dev, _ = repo_folders
    row = models.describe(str(dev))
    assert row.local_folder and row.status == "local folder, used as it is"
    with pytest.raises(StudioError, match="needs no download"):
        models.start_download(str(dev))


def test_speed_and_time_left_are_counted_per_byte():
    from lora_studio.services.settings.local_models import Rate

    now = [100.0]
    rate = Rate(done=1_000_000_000, total=30_000_000_000, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 1.0
        rate.add(50_000_000)  # 50 MB a second
    assert round(rate.per_second) == 50_000_000 and rate.fraction == pytest.approx(0.04)
    assert rate.text() == "1.20 GB of 30.00 GB · 50.0 MB/s · about 10 min left"  # 28.8 GB at 50 MB/s


def test_offline_a_downloaded_model_still_shows_as_on_disk(hub, studio, models, monkeypatch):
    from huggingface_hub import constants

    studio.jobs.wait(models.start_download(OPEN).id, timeout=120)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    row = models.describe(OPEN, refresh=True)
    assert row.download_bytes is None and row.status == "on disk (the Hub was not asked)"
    assert "HF_HUB_OFFLINE" in row.problem
    with pytest.raises(StudioError, match="HF_HUB_OFFLINE"):
        models.start_download(OPEN)


def test_the_fake_hub_pages_its_tree_for_the_real_snapshot_download(hub):
    from huggingface_hub import snapshot_download

    folder = snapshot_download(OPEN, allow_patterns=["model_index.json", "transformer/*"])
    assert (Path(folder) / WEIGHTS).is_file()
    pages = [p for m, p, _ in hub.requests if "/tree/" in p]
    assert len(pages) >= 2  # more entries than one page (7) holds: the client followed Link: rel="next"
