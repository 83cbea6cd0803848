"""The Replicate engine against a fake Replicate API on 127.0.0.1, through the real `replicate` client."""
from __future__ import annotations

import io
import json
import logging
import socket
import struct
import traceback
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.config import ReplicateSettings
from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, LoraWeight, TrainRequest
from lora_studio.engines.replicate.engine import ReplicateEngine, nearest_aspect_ratio
from lora_studio.progress import Canceled, NullReporter

try:
    from fake_replicate import FakeReplicate
except ImportError:  # tests/ became a package
    from tests.fake_replicate import FakeReplicate

TOKEN = "r8_test_SECRET_0123456789"


@pytest.fixture(autouse=True)
def _fast_and_isolated(monkeypatch):
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)


@pytest.fixture
def fake():
    with FakeReplicate(token=TOKEN) as server:
        yield server


def settings_for(fake, **changes) -> ReplicateSettings:
    values = {"base_url": fake.url, "destination": "me/my-character", "trainer_version": "abc123"}
    values.update(changes)
    return ReplicateSettings(**values)


@pytest.fixture
def engine(fake):
    return ReplicateEngine(settings_for(fake), token=TOKEN)


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert "SECRET" not in text


def error_text(exc_info) -> str:
    return "".join(traceback.format_exception(exc_info.value)) + repr(exc_info.value)


def reference_image(size=(48, 32)) -> Image.Image:
    return Image.new("RGB", size, (200, 120, 40))


def make_dataset(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (32, 32), (i * 60, 10, 10)).save(folder / f"img_{i:02d}.png")
        (folder / f"img_{i:02d}.txt").write_text(f"a photo of TOK, view {i}")
    return folder


def train_request(tmp_path: Path, **changes) -> TrainRequest:
    values = dict(dataset_dir=make_dataset(tmp_path / "dataset"), output_dir=tmp_path / "out",
                  work_dir=tmp_path / "work", trigger="TOK", steps=100, rank=8, learning_rate=4e-4,
                  resolution=512)
    values.update(changes)
    return TrainRequest(**values)


# --------------------------------------------------------------------------- predictions


def test_edit_uploads_the_image_and_returns_the_output(fake, engine):
    image = engine.edit(EditRequest(image=reference_image(), prompt="side view", seed=3))
    assert image.size == (48, 32)  # "match_input_image": the fake keeps the uploaded size
    assert image.getpixel((0, 0))[0] == (3 * 37) % 256

    [created] = fake.created("prediction")
    assert created.model == "black-forest-labs/flux-kontext-dev"
    assert fake.find("POST", r"^/v1/models/black-forest-labs/flux-kontext-dev/predictions$")
    inputs = created.input
    assert inputs["prompt"] == "side view" and inputs["seed"] == 3
    assert inputs["aspect_ratio"] == "match_input_image" and inputs["output_format"] == "png"
    [upload] = fake.find("POST", r"^/v1/files$")
    name, content_type, data = upload.body["files"]["content"]
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (48, 32)
    assert inputs["input_image"].endswith("/v1/files/" + next(iter(fake.files)))


def test_generate_passes_lora_weights_and_scale(fake, engine):
    lora = LoraWeight("hero", 0.85, remote="https://example.invalid/hero.safetensors")
    image = engine.generate(GenerateRequest(prompt="TOK at the beach", seed=7, width=1024, height=576,
                                            steps=80, guidance=3.0, loras=(lora,)))
    [inputs] = fake.prediction_inputs()
    assert inputs["lora_weights"] == lora.remote and inputs["lora_scale"] == 0.85
    assert "extra_lora" not in inputs
    assert inputs["aspect_ratio"] == "16:9" and inputs["num_inference_steps"] == 50
    assert inputs["guidance"] == 3.0 and inputs["seed"] == 7
    assert fake.created("prediction")[0].model == "black-forest-labs/flux-dev-lora"
    assert image.getpixel((0, 0))[:2] == ((7 * 37) % 256, 85)  # the fake paints seed and lora_scale
    assert image.size == (64, 36)


def test_go_fast_is_always_sent_and_replicate_scales_loras_by_1_5_with_it(fake, engine):
    lora = LoraWeight("hero", 0.6, remote="me/hero:1")
    extra = LoraWeight("style", 0.4, remote="me/style:1")
    engine.generate(GenerateRequest(prompt="default", loras=(lora, extra)))
    engine.generate(GenerateRequest(prompt="fast", loras=(lora, extra), go_fast=True))
    engine.generate(GenerateRequest(prompt="plain"))
    default, fast, plain = fake.created("prediction")
    assert default.input["go_fast"] is False and plain.input["go_fast"] is False
    assert default.applied == {"go_fast": False, "lora_scale": 0.6, "extra_lora_scale": 0.4}
    assert fast.applied == {"go_fast": True, "lora_scale": pytest.approx(0.9), "extra_lora_scale": pytest.approx(0.6)}


def test_two_loras_use_extra_lora_and_none_uses_plain_flux_dev(fake, engine):
    loras = (LoraWeight("a", 1.0, remote="me/a:111"), LoraWeight("b", 0.5, remote="https://x.invalid/b.tar"))
    engine.generate(GenerateRequest(prompt="two styles", loras=loras))
    engine.generate(GenerateRequest(prompt="no lora"))
    two, plain = fake.created("prediction")
    assert two.input["lora_weights"] == "me/a:111" and two.input["lora_scale"] == 1.0
    assert two.input["extra_lora"] == "https://x.invalid/b.tar" and two.input["extra_lora_scale"] == 0.5
    assert plain.model == "black-forest-labs/flux-dev" and "lora_weights" not in plain.input


def test_three_loras_or_a_local_only_lora_are_refused_before_any_request(fake, engine):
    three = tuple(LoraWeight(n, 1.0, remote=f"me/{n}:1") for n in "abc")
    with pytest.raises(EngineError, match="at most two"):
        engine.generate(GenerateRequest(prompt="x", loras=three))
    local = LoraWeight("mine", 1.0, path=Path("/tmp/mine.safetensors"))
    with pytest.raises(EngineError, match="only on this machine"):
        engine.generate(GenerateRequest(prompt="x", loras=(local,)))
    assert fake.requests == []


def test_versioned_model_uses_the_predictions_endpoint(fake):
    engine = ReplicateEngine(settings_for(fake, lora_model="me/my-flux:deadbeef"), token=TOKEN)
    engine.generate(GenerateRequest(prompt="x", loras=(LoraWeight("a", 1.0, remote="me/a:1"),)))
    [create] = fake.find("POST", r"^/v1/predictions$")
    assert create.body["version"] == "deadbeef"


def test_failed_prediction_raises_with_replicates_error(fake, engine):
    with pytest.raises(EngineError, match="the fake was asked to FAIL") as info:
        engine.generate(GenerateRequest(prompt="please FAIL"))
    assert "failed" in str(info.value)


def test_slow_prediction_times_out_is_canceled_and_tried_once_more(fake):
    engine = ReplicateEngine(settings_for(fake), token=TOKEN, prediction_timeout=0.2)
    with pytest.raises(EngineError, match="longer than 0.2 s.*tried twice with the same seed"):
        engine.generate(GenerateRequest(prompt="HANG forever", seed=5))
    first, second = fake.created("prediction")
    assert fake.canceled == [first.id, second.id] and first.input == second.input  # same seed
    assert not fake.running()


@pytest.mark.parametrize("status, words", [(402, "billing"), (422, "bad aspect")])
def test_http_errors_become_clear_messages(fake, engine, status, words):
    fake.inject(status, "bad aspect ratio", method="POST", path_prefix="/v1/models/")
    with pytest.raises(EngineError, match=words):
        engine.generate(GenerateRequest(prompt="x"))
    assert fake.served() == 0  # refused input is not tried again


# --------------------------------------------------------------------------- tokens and connections


def test_missing_token_fails_work_not_construction(fake, caplog):
    engine = ReplicateEngine(settings_for(fake))
    assert "REPLICATE_API_TOKEN" in engine.describe()
    with pytest.raises(EngineError, match="REPLICATE_API_TOKEN"):
        engine.edit(EditRequest(image=reference_image(), prompt="x"))
    with pytest.raises(EngineError, match="API token"):
        engine.train(TrainRequest(dataset_dir=Path("."), output_dir=Path("."), work_dir=Path("."), trigger="T"),
                     NullReporter())
    assert fake.requests == []


def test_token_from_environment_is_used_but_never_shown(fake, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    engine = ReplicateEngine(settings_for(fake))
    reporter = NullReporter()
    engine.generate(GenerateRequest(prompt="x"))
    engine.train(train_request(tmp_path), reporter)
    with pytest.raises(EngineError) as info:
        engine.generate(GenerateRequest(prompt="FAIL"))
    assert all(r.authorized for r in fake.requests if r.path.startswith("/v1/"))
    assert_no_token(repr(engine), engine.describe(), repr(vars(engine)), caplog.text, "\n".join(reporter.logs),
                    error_text(info))


def test_wrong_token_is_reported_without_echoing_it(fake):
    engine = ReplicateEngine(settings_for(fake), token="r8_wrong_SECRET")
    with pytest.raises(EngineError, match=r"refused this token \(401\)") as info:
        engine.generate(GenerateRequest(prompt="x"))
    assert_no_token(error_text(info))
    assert "r8_wrong" not in error_text(info)
    assert fake.requests[-1].authorized is False


def test_unreachable_server_names_the_base_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}"
    engine = ReplicateEngine(ReplicateSettings(base_url=url), token=TOKEN)
    with pytest.raises(EngineError, match="Could not reach Replicate") as info:
        engine.generate(GenerateRequest(prompt="x"))
    assert url in str(info.value)
    assert_no_token(error_text(info))


# --------------------------------------------------------------------------- training


def test_train_uploads_zip_streams_progress_and_downloads_weights(fake, engine, tmp_path):
    reporter = NullReporter()
    request = train_request(tmp_path)
    result = engine.train(request, reporter)

    [upload] = fake.find("POST", r"^/v1/files$")
    name, content_type, data = upload.body["files"]["content"]
    assert content_type == "application/zip"
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == [f"img_{i:02d}.{ext}" for i in range(3) for ext in ("png", "txt")]

    [training] = fake.created("training")
    assert fake.find("POST", r"^/v1/models/ostris/flux-dev-lora-trainer/versions/abc123/trainings$")
    assert training.destination == "me/my-character"
    assert training.input == {"input_images": f"{fake.url}/v1/files/{next(iter(fake.files))}",
                              "trigger_word": "TOK", "steps": 100, "lora_rank": 8, "learning_rate": 4e-4,
                              "resolution": "512", "autocaption": False}

    assert any("step 50/100" in line for line in reporter.logs)
    assert any("Extracted 3 images" in line for line in reporter.logs)
    assert len([l for l in reporter.logs if "step 100/100" in l]) == 1  # each log line forwarded once
    assert reporter.last_progress == 1.0
    losses = reporter.metrics["loss"]
    assert [step for step, _ in losses] == [25, 50, 75, 100]  # once per step, not once per line
    assert losses[0][0] == 25 and losses[-1][0] == 100 and losses[-1][1] == pytest.approx(0.1, abs=1e-3)
    assert reporter.outputs["replicate_training_id"] == training.id

    assert result.lora_path == request.output_dir / "lora.safetensors"
    assert engine.check_lora(result.lora_path)["format"] == "unknown-remote"
    assert sorted(p.name for p in request.output_dir.iterdir()) == ["lora.safetensors"]  # no temp files
    assert result.steps == 100 and result.final_loss == pytest.approx(0.1, abs=1e-3)
    assert result.remote == training.output["weights"]
    assert result.metadata["replicate_training_id"] == training.id
    assert result.metadata["version"].startswith("me/my-character:")
    assert result.billed_s is not None and result.billed_s > 0  # billed from "processing" to "succeeded"


def test_train_looks_up_the_trainer_version_and_accepts_plain_weights(tmp_path):
    with FakeReplicate(token=TOKEN, weights_as_tar=False) as fake:
        engine = ReplicateEngine(settings_for(fake, trainer_version=""), token=TOKEN)
        zip_path = tmp_path / "given.zip"
        with zipfile.ZipFile(zip_path, "w") as z:
            z.writestr("a.png", _png_bytes())
        request = train_request(tmp_path, zip_path=zip_path)
        result = engine.train(request, NullReporter())
        assert fake.find("GET", r"^/v1/models/ostris/flux-dev-lora-trainer$")
        [upload] = fake.find("POST", r"^/v1/files$")
        assert upload.body["files"]["content"][0] == "given.zip"
        header = _header(result.lora_path)
        assert any(k.endswith("lora_A.weight") for k in header)


def test_cancel_during_training_cancels_on_replicate(fake, engine, tmp_path):
    class CancelOnFirstStep(NullReporter):
        def log(self, message):
            super().log(message)
            if "step" in message:
                self.cancel = True

    request = train_request(tmp_path)
    with pytest.raises(Canceled):
        engine.train(request, CancelOnFirstStep())
    [training] = fake.created("training")
    assert fake.canceled == [training.id] and training.status == "canceled"
    assert not (request.output_dir / "lora.safetensors").exists()


def test_failed_training_and_missing_destination(fake, tmp_path):
    engine = ReplicateEngine(settings_for(fake), token=TOKEN)
    with pytest.raises(EngineError, match="CUDA out of memory"):
        engine.train(train_request(tmp_path, trigger="FAIL"), NullReporter())
    no_dest = ReplicateEngine(settings_for(fake, destination=""), token=TOKEN)
    before = len(fake.requests)
    with pytest.raises(EngineError, match="destination"):
        no_dest.train(train_request(tmp_path / "again"), NullReporter())
    assert len(fake.requests) == before


def test_check_lora_and_helpers(tmp_path, engine):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(EngineError, match="not a valid"):
        engine.check_lora(bad)
    with pytest.raises(EngineError, match="not found"):
        engine.check_lora(tmp_path / "missing.safetensors")
    assert nearest_aspect_ratio(1024, 1024) == "1:1" and nearest_aspect_ratio(832, 1216) == "2:3"
    assert engine.name == "replicate" and engine.makes_noise is False
    assert "flux-kontext-dev" in engine.describe()
    engine.unload()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, format="PNG")
    return buf.getvalue()


def _header(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size])
