"""Engine setup in the page: choices checked, remembered, switched without a restart, flags winning."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from lora_studio.config import Settings
from lora_studio.errors import StudioError
from lora_studio.services.settings.engine_setup import EngineChoice, check
from lora_studio.studio import Studio


@pytest.fixture(scope="module")
def dev_folder(tmp_path_factory):
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    folder = tmp_path_factory.mktemp("models") / "flux-dev"
    build_tiny_flux(seed=1).save_pretrained(folder)
    return folder


def test_choices_are_checked_at_the_door(dev_folder, tmp_path):
    assert check(EngineChoice("local", "black-forest-labs/FLUX.1-dev")).model == "black-forest-labs/FLUX.1-dev"
    assert check(EngineChoice("local", str(dev_folder))).model == str(dev_folder)
    for bad, words in [(EngineChoice("gpu"), "Choose the engine"), (EngineChoice("local"), "needs a FLUX.1-dev model"),
                       (EngineChoice("local", "x" * 600), "up to 500"),
                       (EngineChoice("local", "relative/../../etc"), "neither a hub id"),
                       (EngineChoice("local", str(tmp_path)), "no model_index.json"),
                       (EngineChoice("local", str(dev_folder), str(dev_folder)), "not a FLUX.1 Kontext model"),
                       (EngineChoice("replicate", destination="Me/../x"), "owner/name")]:
        with pytest.raises(StudioError, match=words):
            check(bad)
    kontext = tmp_path / "kontext"
    kontext.mkdir()
    (kontext / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    with pytest.raises(StudioError, match="put it in the Kontext field"):
        check(EngineChoice("local", str(kontext)))
    assert check(EngineChoice("local", str(dev_folder), str(kontext))).kontext_model == str(kontext)


def test_the_choice_is_remembered_and_a_broken_file_is_ignored(dev_folder, tmp_path):
    workspace = tmp_path / "ws"
    with Studio(Settings(workspace=workspace)) as studio:
        studio.reconfigure(EngineChoice("local", str(dev_folder)))
        assert studio.limits.engine == "local" and studio.settings.image_size == 1024
        assert {r.name: r.source for r in studio.setup.rows(studio.settings)}["model"] == "page"
    with Studio(Settings(workspace=workspace)) as studio:
        assert (studio.settings.engine, studio.settings.model) == ("local", str(dev_folder))
    for broken in ('{"engine": "gpu"}', '{"engine": "local", "model": "/gone"}'):  # readable, not usable here
        (workspace / "setup.json").write_text(broken)
        with Studio(Settings(workspace=workspace)) as studio:
            assert studio.settings.engine == "tiny" and "ignored" in studio.setup.note
    for broken in ("{not json", '["local"]', "[" * 100_000 + "]" * 100_000):  # not a choice: set aside
        (workspace / "setup.json").write_text(broken)
        with Studio(Settings(workspace=workspace)) as studio:
            assert studio.settings.engine == "tiny" and [m.name for m in studio.moved] == ["setup.json"]
            assert not (workspace / "setup.json").exists()


def test_flags_and_environment_win_and_say_so(dev_folder, tmp_path):
    env = {"LORA_STUDIO_MODEL": str(dev_folder)}
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "setup.json").write_text(json.dumps({"engine": "tiny", "kontext_model": ""}))
    with Studio(Settings.from_env(env, workspace=tmp_path / "ws")) as studio:
        rows = {r.name: r for r in studio.setup.rows(studio.settings)}
        assert studio.settings.engine == "local"
        assert rows["model"].source == "environment" and "LORA_STUDIO_MODEL" in rows["model"].describe()
        assert rows["engine"].source == "environment"
        with pytest.raises(StudioError, match="win over this page"):
            studio.reconfigure(EngineChoice("tiny"))
    with Studio(Settings.from_env({}, workspace=tmp_path / "ws2", engine="tiny")) as studio:
        assert "set by --engine at launch" in studio.setup.rows(studio.settings)[0].describe()


def test_switching_is_refused_while_a_job_runs_and_queued_jobs_wait(dev_folder, tmp_path):
    release, started = threading.Event(), threading.Event()
    seen = []

    def blocking(params, reporter):
        started.set()
        release.wait(60)

    with Studio(Settings(workspace=tmp_path / "ws")) as studio:
        studio.jobs.register("block", blocking)
        studio.jobs.register("which", lambda params, reporter: seen.append(studio.settings.engine))
        running = studio.jobs.submit("block", {})
        assert started.wait(30)
        with pytest.raises(StudioError, match="A job is running"):
            studio.reconfigure(EngineChoice("local", str(dev_folder)))
        assert studio.settings.engine == "tiny" and not (studio.store.root / "setup.json").exists()
        release.set()
        studio.jobs.wait(running.id, 30)
        with studio.jobs.gate.hold("busy"):  # the switch holds the queue: a job queued meanwhile waits for it
            queued = studio.jobs.submit("which", {})
            assert studio.jobs.get(queued.id).status == "queued"
        assert studio.jobs.wait(queued.id, 30).status == "succeeded"
        studio.reconfigure(EngineChoice("local", str(dev_folder)))
        again = studio.jobs.submit("which", {})
        assert studio.jobs.wait(again.id, 30).status == "succeeded" and seen == ["tiny", "local"]


@pytest.mark.slow  # the running app, three engine switches
def test_switch_tiny_local_tiny_in_the_page_and_draw_each_time(dev_folder, tmp_path):
    """Through gradio_client as a user would; each image is drawn by whatever engine is configured then
    (in-process, at 64 px: the local engine's default 1024 px is too big for the tiny weights on a CPU)."""
    from gradio_client import Client

    from tests.app_server import running_app

    with running_app(tmp_path / "ws") as (studio, url):
        client = Client(url, verbose=False)

        def draw():
            return np.asarray(studio.generate("photo of mila", seed=3, width=64, height=64, steps=2))

        first = draw()
        sources, status, banner = client.predict("local", str(dev_folder), "", api_name="/setup_engine")[:3]
        assert "Switched to **local**" in status and "chosen here" in sources and "Kontext" in banner
        assert studio.engine().name == "local" and studio.engine().manager.model_id == str(dev_folder)
        local = draw()
        assert not np.array_equal(first, local)  # other weights (seed 1 vs the built-in ones)
        _, status, banner = client.predict("tiny", "", "", api_name="/setup_engine")[:3]
        assert "Switched to **tiny**" in status and "noise" in banner
        assert np.array_equal(draw(), first)
        assert json.loads((studio.store.root / "setup.json").read_text())["engine"] == "tiny"


def test_the_owner_too_is_bounded_at_the_door(tmp_path):
    """A private launch makes the page's user the owner; their values are still checked before anything
    is written or switched."""
    from gradio_client import Client

    from tests.app_server import running_app
    from tests.hostile_kit import refused, unchanged

    with running_app(tmp_path / "ws") as (studio, url):
        client = Client(url, verbose=False)
        with unchanged(studio.store.root):
            refused(client, "not in the list of choices|Choose the engine", "../../etc", "", "", api_name="/setup_engine")
            refused(client, "up to 500 characters", "local", "x" * 100_000, "", api_name="/setup_engine")
            refused(client, "neither a hub id", "local", "a/b/c", "", api_name="/setup_engine")
            refused(client, "no model_index.json", "local", "/etc", "", api_name="/setup_engine")
            refused(client, "one word", "r8 " + "a" * 10_000, api_name="/replicate_token")
            refused(client, "lowercase letters", "Not A Name!", api_name="/replicate_create_model")
        assert studio.settings.engine == "tiny"
        assert "First run" in client.predict("tiny", "", "", api_name="/setup_engine")[2]


def test_the_memory_plan_counts_the_kontext_transformer(tmp_path):
    settings = Settings(engine="local", model="black-forest-labs/FLUX.1-dev",
                        kontext_model="black-forest-labs/FLUX.1-Kontext-dev", workspace=tmp_path / "ws")
    with Studio(settings, start=False) as studio:
        plan = studio.training.memory_plan(512)
        assert "FLUX.1-Kontext-dev's transformer (~23.8 GB in bf16) waits in CPU memory" in plan
        assert "Character sheet with FLUX.1 Kontext from black-forest-labs/FLUX.1-Kontext-dev" in \
            studio.engine_description()
    with Studio(Settings(engine="local", model="x/flux", workspace=tmp_path / "ws2"), start=False) as studio:
        assert "Kontext" not in studio.training.memory_plan(512)


def test_values_given_in_code_win_like_flags(dev_folder, tmp_path):
    """A script's Settings(model=…) is not overridden by what the page once saved in the workspace."""
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "setup.json").write_text(json.dumps({"engine": "tiny"}))
    with Studio(Settings(engine="local", model=str(dev_folder), workspace=tmp_path / "ws"), start=False) as studio:
        assert (studio.settings.engine, studio.settings.model) == ("local", str(dev_folder))
        assert {r.name: r.source for r in studio.setup.rows(studio.settings)}["model"] == "flag"
