"""A Hub that lies: file names, commits and ETags that would climb out of the cache, and a listing of
100 000 files, served by tests/fake_hub.py to the real huggingface_hub client. Each is refused in
words before it becomes a path, and nothing lands outside the cache (issue 26, finding 1)."""
from __future__ import annotations

import pytest

from lora_studio.errors import StudioError
from tests.fake_hub import FakeHub, point_client_at, save_pipeline

MARK = "escaped-by-the-hub"  # the file a hostile answer tries to write; it must exist nowhere
CLIMB = "../" * 8 + MARK
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    return save_pipeline(build_tiny_flux(), tmp_path_factory.mktemp("repo") / "dev")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as fake:
        fake.env = point_client_at(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def escaped(root) -> list:
    return [p for p in root.rglob(f"*{MARK}*")]


def resolved(hub: FakeHub) -> list:
    return [(m, p) for m, p, _ in hub.requests if "/resolve/" in p]


@pytest.mark.parametrize("name", [f"transformer/{CLIMB}", "transformer/./x.json", "/etc/" + MARK,
                                  "transformer\\..\\..\\" + MARK, "transformer//x.json", "C:/" + MARK,
                                  "transformer/a\x00b"])
def test_a_file_name_that_leaves_the_folder_is_refused_before_any_byte(hub, folder, models, tmp_path, name):
    hub.add_repo("evil/names", folder, files={name: b"payload"})
    with pytest.raises(StudioError) as refused:
        models.start_download("evil/names")
    assert "outside the model's folder" in str(refused.value) and "HF_ENDPOINT" in str(refused.value)
    assert resolved(hub) == [] and models.downloads() == []  # not even the index was fetched
    assert escaped(tmp_path) == []
    row = models.describe("evil/names")  # the Settings row says it too, instead of failing
    assert "outside the model's folder" in row.problem


def test_a_commit_that_is_no_commit_id_names_no_folder(hub, folder, models, tmp_path):
    hub.add_repo("evil/commit", folder, commit=CLIMB)
    with pytest.raises(StudioError, match="not a commit id"):
        models.start_download("evil/commit")
    assert resolved(hub) == [] and escaped(tmp_path) == []


@pytest.mark.parametrize("path", ["model_index.json", WEIGHTS])
def test_an_etag_that_climbs_out_of_blobs_writes_nothing(hub, folder, studio, models, tmp_path, path):
    hub.add_repo("evil/etag", folder, etags={path: CLIMB})
    if path == "model_index.json":  # read by the listing: refused before a job exists
        with pytest.raises(StudioError, match="ETag"):
            models.start_download("evil/etag")
    else:
        done = studio.jobs.wait(models.start_download("evil/etag").id, timeout=120)
        assert done.status == "failed" and "ETag" in done.error and "nothing was written" in done.error
    assert escaped(tmp_path) == []
    assert not any(m == "GET" and p.endswith(path) for m, p in resolved(hub))  # its bytes were never asked for


def test_a_listing_of_100000_files_is_refused_in_words(hub, folder, models, tmp_path):
    many = {f"transformer/shard-{i:06d}.json": b"{}" for i in range(100_000)}
    hub.add_repo("evil/many", folder, files=many)
    with pytest.raises(StudioError) as refused:
        models.start_download("evil/many")
    assert "100" in str(refused.value) and "few dozen" in str(refused.value)
    assert [p for _, p in resolved(hub) if "shard-" in p] == [] and models.downloads() == []


def test_an_index_nested_100000_deep_or_not_an_object_is_refused(hub, folder, models):
    hub.add_repo("evil/deep", folder, files={"model_index.json": b"[" * 100_000 + b"]" * 100_000})
    hub.add_repo("evil/list", folder, files={"model_index.json": b"[1, 2]"})
    hub.add_repo("evil/empty", folder, files={"model_index.json": b'{"transformer": [], "vae": []}'})
    for repo in ("evil/deep", "evil/list"):
        with pytest.raises(StudioError, match="not a pipeline index"):
            models.start_download(repo)
    with pytest.raises(StudioError, match="no diffusers-layout transformer"):  # an empty entry names no folder
        models.start_download("evil/empty")


def test_a_size_that_is_no_size_is_refused(hub, folder):
    from lora_studio.engines.hub.repo import HubError, check_listing

    commit = "a" * 40
    for size in (-1, 2**60, True, "12"):
        with pytest.raises(HubError, match="size"):
            check_listing("evil/size", commit, [("transformer/x.safetensors", size)])
    assert check_listing("ok/size", commit, [("transformer/x.safetensors", None)])[1][0].size == 0
