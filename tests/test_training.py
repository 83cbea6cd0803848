"""LoRA training on the tiny Flux, on the CPU: the loop, files, cache, resume, cancel, memory modes."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image
from safetensors.torch import load_file

from lora_studio.engines.base import EngineError, OutOfMemory, TrainRequest
from lora_studio.engines.builtin.tiny import build_tiny_flux
from lora_studio.progress import Canceled, NullReporter
from lora_studio.engines.memory import plan as memory
from lora_studio.training import presets
from lora_studio.training.dataset import (
    BatchSchedule,
    Example,
    assign_buckets,
    caption_with_trigger,
    load_examples,
    make_buckets,
)
from lora_studio.training.trainer import ADAPTER_NAME, train_lora
from tests.lora_factory import probe_transformer

TRIGGER = "ohwx"
SIZES = [(64, 64), (64, 64), (96, 48), (48, 96)]


def make_dataset(folder: Path) -> Path:
    """Four small, clearly different synthetic images, with one caption missing."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * (i + 1) * 4) % 256, (yy * (i + 2) * 3) % 256, np.full_like(xx, 60 * i)], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"img{i}.png")
        if i != 3:
            (folder / f"img{i}.txt").write_text(f"picture number {i}, {TRIGGER}" if i == 0 else f"picture number {i}")
    return folder


def request(tmp: Path, **overrides) -> TrainRequest:
    fields = dict(
        dataset_dir=tmp / "data",
        output_dir=tmp / "out",
        work_dir=tmp / "work",
        trigger=TRIGGER,
        steps=8,
        rank=4,
        alpha=8.0,
        learning_rate=1e-3,
        resolution=64,
        checkpoint_every=0,
        sample_every=0,
        memory_mode="auto",
    )
    fields.update(overrides)
    if not Path(fields["dataset_dir"]).exists():
        make_dataset(Path(fields["dataset_dir"]))
    return TrainRequest(**fields)


def transformer_probe(transformer) -> torch.Tensor:
    """The transformer's output on fixed inputs (32x32 px image, 8 text tokens)."""
    return probe_transformer(transformer, side=16, tokens=8, timestep=0.5, seed=7)


def assert_pipeline_clean(pipe, base_output: torch.Tensor) -> None:
    transformer = pipe.transformer
    assert not any("lora" in name for name in transformer.state_dict()), "adapter layers left behind"
    assert not getattr(transformer, "peft_config", None)
    assert not transformer.is_gradient_checkpointing
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name)
        assert not module.training, f"{name} left in train mode"
        assert not any(p.requires_grad for p in module.parameters()), f"{name} left with gradients"
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.parameters())
    assert torch.equal(transformer_probe(transformer), base_output)


class ScriptedReporter(NullReporter):
    """Once step `after` has reported progress, the next cancel check raises `error` (a crash) or,
    with no error, the user's cancel."""

    def __init__(self, after: int, error: type[BaseException] | None = None) -> None:
        super().__init__()
        self.after, self.error, self.steps = after, error, 0

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        self.steps += 1
        if self.steps == self.after and self.error is None:
            self.cancel = True

    def check_cancel(self) -> None:
        if self.error is not None and self.steps == self.after:
            raise self.error(f"simulated crash after step {self.after}")
        super().check_cancel()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_flux()


@pytest.fixture(scope="module")
def base_output(pipe):
    return transformer_probe(pipe.transformer)


@pytest.fixture(scope="module")
def trained(pipe, base_output, tmp_path_factory):
    """One real overfitting run, shared by the tests that only read its results."""
    tmp = tmp_path_factory.mktemp("trained")
    reporter = NullReporter()
    seen: list[Image.Image] = []

    def scorer(image):
        seen.append(image.copy())
        return float(len(seen))  # later samples score worse: the first one stays the best

    req = request(tmp, steps=48, sample_every=24, checkpoint_every=16)
    result = train_lora(pipe, req, reporter, sample_scorer=scorer)
    return dict(tmp=tmp, request=req, reporter=reporter, result=result, samples=seen)


# --- training and its files -----------------------------------------------------------------------


def test_loss_falls_when_overfitting(trained):
    losses = [v for _, v in trained["reporter"].metrics["loss"]]
    assert len(losses) == 48
    assert np.mean(losses[-12:]) < 0.8 * np.mean(losses[:12]), losses


def test_reports_progress_metrics_and_samples(trained):
    reporter = trained["reporter"]
    assert reporter.last_progress == pytest.approx(1.0)
    for name in ("loss", "loss_smooth", "it_per_s", "eta_s", "peak_mem_gb", "identity"):
        assert reporter.metrics.get(name), name
    assert [step for step, _ in reporter.metrics["identity"]] == [24, 48]
    assert any("Memory mode 'full'" in line for line in reporter.logs)
    samples = reporter.outputs["samples"]
    assert [Path(p).name for p in samples] == ["step_000024.png", "step_000048.png"]
    assert all(Path(p).exists() for p in samples)


def test_output_files_and_checkpoints(trained):
    result, req = trained["result"], trained["request"]
    out = req.output_dir
    assert result.lora_path == out / "lora.safetensors"
    assert result.extra_files == {
        "kohya": out / "lora_kohya.safetensors",
        "metadata": out / "metadata.json",
        "card": out / "README.md",
    }
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "lora.safetensors", "lora_kohya.safetensors", "metadata.json"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["trigger"] == TRIGGER and meta["rank"] == 4 and meta["alpha"] == 8.0 and meta["steps"] == 48
    assert meta["memory_mode"] == "full" and meta["final_loss"] == pytest.approx(result.final_loss)
    assert TRIGGER in (out / "README.md").read_text()
    # keep the last two + the best (the first sample, step 24)
    steps = sorted(p.name for p in (req.work_dir / "checkpoints").iterdir())
    assert steps == ["step_000024", "step_000032", "step_000048"]
    assert result.best_checkpoint == str(req.work_dir / "checkpoints" / "step_000024")
    assert {p.name for p in Path(result.best_checkpoint).iterdir()} == {
        "lora.safetensors", "optimizer.pt", "rng.safetensors", "state.json",
    }


def test_pipeline_returns_to_base(pipe, base_output, trained):
    assert_pipeline_clean(pipe, base_output)


def test_saved_lora_reloads_in_fresh_pipeline_and_reproduces_training_output(trained, base_output):
    req = trained["request"]
    state, metadata = FluxPipeline.lora_state_dict(str(req.output_dir), weight_name="lora.safetensors", return_lora_metadata=True)
    # alpha/rank (8/4) is folded into lora_B and the file says alpha = rank: scale 1 in every loader
    assert metadata["transformer.lora_alpha"] == 4 and metadata["transformer.r"] == 4
    assert state and all(k.startswith("transformer.") for k in state)

    fresh = build_tiny_flux()
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(str(req.output_dir), weight_name="lora.safetensors", adapter_name="mine")
    assert not torch.allclose(transformer_probe(fresh.transformer), base_output, atol=1e-4)

    # The last sample was drawn by the training pipeline with the adapter as trained; the fresh
    # pipeline with the saved file, same prompt and seed, must draw the same image.
    image = fresh(
        prompt=f"{TRIGGER}, portrait photo", height=64, width=64, num_inference_steps=4,
        guidance_scale=3.5, generator=torch.Generator().manual_seed(req.seed),
    ).images[0]
    trained_sample = np.asarray(trained["samples"][-1], dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - trained_sample).max() <= 1


# --- resume, cancel, errors -----------------------------------------------------------------------


def lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_resume_after_crash_equals_uninterrupted_run(pipe, base_output, tmp_path):
    data = make_dataset(tmp_path / "data")
    straight = request(tmp_path / "a", dataset_dir=data, steps=9, checkpoint_every=3)
    train_lora(pipe, straight, NullReporter())

    crashed = request(tmp_path / "b", dataset_dir=data, steps=9, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lora(pipe, crashed, ScriptedReporter(after=4, error=RuntimeError))  # dies starting step 5
    assert_pipeline_clean(pipe, base_output)
    assert not crashed.output_dir.exists()
    assert [p.name for p in (crashed.work_dir / "checkpoints").iterdir()] == ["step_000003"]

    reporter = NullReporter()
    train_lora(pipe, crashed, reporter)
    assert any("Resumed from step_000003" in line for line in reporter.logs)
    assert [s for s, _ in reporter.metrics["loss"]] == list(range(4, 10))
    a = lora_tensors(straight.output_dir / "lora.safetensors")
    b = lora_tensors(crashed.output_dir / "lora.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: same batches, noise, timesteps and Adam state


def test_cancel_saves_checkpoint_and_restores_pipeline(pipe, base_output, tmp_path):
    req = request(tmp_path, steps=20, checkpoint_every=0)
    reporter = ScriptedReporter(after=3)  # the user presses cancel during step 3
    with pytest.raises(Canceled):
        train_lora(pipe, req, reporter)
    assert [s for s, _ in reporter.metrics["loss"]] == [1, 2, 3]
    assert [p.name for p in (req.work_dir / "checkpoints").iterdir()] == ["step_000003"]
    assert not req.output_dir.exists()
    assert_pipeline_clean(pipe, base_output)

    # A cancel during a sample image stops the sample too (it checks between denoising steps).
    req = request(tmp_path / "sampling", steps=20, sample_every=2)
    reporter = ScriptedReporter(after=2)
    with pytest.raises(Canceled):
        train_lora(pipe, req, reporter)
    assert [p.name for p in (req.work_dir / "checkpoints").iterdir()] == ["step_000002"]
    assert not (req.work_dir / "samples").exists()
    assert_pipeline_clean(pipe, base_output)


def test_out_of_memory_names_a_lighter_mode(pipe, base_output, tmp_path):
    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)  # exists in CPU builds too

    def explode(module, args, kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = pipe.transformer.register_forward_pre_hook(explode, with_kwargs=True)
    try:
        for mode, lighter in (("full", "checkpointing"), ("checkpointing", "8bit")):
            req = request(tmp_path / mode, memory_mode=mode, checkpoint_every=1)
            with pytest.raises(OutOfMemory, match=f"memory mode '{lighter}'"):
                train_lora(pipe, req, NullReporter())
            assert not req.output_dir.exists()
            assert not (req.work_dir / "checkpoints").exists()
    finally:
        handle.remove()
    assert_pipeline_clean(pipe, base_output)


def test_bad_settings_and_data_fail_clearly(pipe, base_output, tmp_path):
    for mode in ("8bit", "nf4", "fp8", "lowvram"):
        with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
            train_lora(pipe, request(tmp_path, memory_mode=mode), NullReporter())
    with pytest.raises(EngineError, match="Unknown memory mode"):
        train_lora(pipe, request(tmp_path, memory_mode="turbo"), NullReporter())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match="no images"):
        train_lora(pipe, request(tmp_path, dataset_dir=empty), NullReporter())
    (empty / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EngineError, match="broken.png is not a readable image"):
        train_lora(pipe, request(tmp_path, dataset_dir=empty), NullReporter())
    assert_pipeline_clean(pipe, base_output)


# --- cache ----------------------------------------------------------------------------------------


def test_second_run_uses_the_cache(pipe, base_output, tmp_path):
    calls = {"vae": 0, "text": 0}

    def count_text(module, args, kwargs):
        calls["text"] += 1

    encode = pipe.vae.encode

    def counting_encode(*args, **kwargs):
        calls["vae"] += 1
        return encode(*args, **kwargs)

    hooks = [m.register_forward_pre_hook(count_text, with_kwargs=True) for m in (pipe.text_encoder, pipe.text_encoder_2)]
    pipe.vae.encode = counting_encode
    try:
        train_lora(pipe, request(tmp_path, steps=2, sample_every=2), NullReporter())
        assert calls["vae"] == 4 and calls["text"] == 2 * 5  # 4 images; 4 captions + sample prompt, 2 encoders
        calls.update(vae=0, text=0)
        reporter = NullReporter()
        train_lora(pipe, request(tmp_path, steps=3, sample_every=3, resume=False), reporter)
        assert calls == {"vae": 0, "text": 0}
        assert any("came from the cache" in line for line in reporter.logs)
    finally:
        del pipe.vae.encode
        for hook in hooks:
            hook.remove()
    assert_pipeline_clean(pipe, base_output)


# --- inference adapters, gradient checkpointing ---------------------------------------------------


def test_training_with_inference_loras_loaded(trained, tmp_path):
    pipe = build_tiny_flux()
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(trained["request"].output_dir), weight_name="lora.safetensors", adapter_name="style")
    pipe.set_adapters(["style"], [0.5])
    before = transformer_probe(pipe.transformer)
    keys_before = set(pipe.transformer.state_dict())

    train_lora(pipe, request(tmp_path, steps=3), NullReporter())

    transformer = pipe.transformer
    assert set(transformer.peft_config) == {"style"} and ADAPTER_NAME not in transformer.peft_config
    assert transformer.active_adapters() == ["style"]
    assert set(transformer.state_dict()) == keys_before
    assert torch.equal(transformer_probe(transformer), before)
    assert not any(p.requires_grad for p in transformer.parameters())

    pipe.disable_lora()  # a disabled inference LoRA stays disabled, and training still trains
    disabled = transformer_probe(transformer)
    reporter = NullReporter()
    train_lora(pipe, request(tmp_path / "again", steps=12), reporter)
    losses = [v for _, v in reporter.metrics["loss"]]
    assert losses[-1] != losses[0]
    assert torch.equal(transformer_probe(transformer), disabled)


def test_gradient_checkpointing_mode_runs(pipe, base_output, tmp_path):
    seen = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args: seen.append((module.is_gradient_checkpointing, torch.is_grad_enabled()))
    )
    try:
        reporter = NullReporter()
        train_lora(pipe, request(tmp_path, steps=3, memory_mode="checkpointing", batch_size=2), reporter)
    finally:
        handle.remove()
    assert len(seen) == 3 and all(flags == (True, True) for flags in seen)
    assert [s for s, _ in reporter.metrics["loss"]] == [1, 2, 3]
    assert any("Memory mode 'checkpointing'" in line for line in reporter.logs)
    assert_pipeline_clean(pipe, base_output)


# --- data: captions and buckets -------------------------------------------------------------------


def test_captions_always_carry_the_trigger(tmp_path):
    assert caption_with_trigger(None, "ohwx") == "ohwx"
    assert caption_with_trigger("  ", "ohwx") == "ohwx"
    assert caption_with_trigger("a woman smiling", "ohwx") == "ohwx, a woman smiling"
    assert caption_with_trigger("photo of OHWX smiling", "ohwx") == "photo of OHWX smiling"
    examples = load_examples(make_dataset(tmp_path / "data"), TRIGGER)
    assert [e.caption for e in examples] == [
        "picture number 0, ohwx", "ohwx, picture number 1", "ohwx, picture number 2", "ohwx",
    ]


def test_buckets_group_mixed_aspect_images():
    for resolution, multiple in ((64, 2), (512, 16), (1024, 16)):
        buckets = make_buckets(resolution, multiple)
        assert any(b.width == b.height == resolution for b in buckets)
        for b in buckets:
            assert b.width % multiple == 0 and b.height % multiple == 0
            assert 0.8 * resolution**2 <= b.width * b.height <= 1.05 * resolution**2
            assert 0.5 <= b.aspect <= 2.0

    def example(w, h, i):
        return Example(Path(f"{i}.png"), "x", w, h, str(i))

    sizes = [(64, 64), (60, 62), (96, 48), (100, 52), (48, 96), (50, 99), (64, 64), (1000, 1000)]
    examples = [example(w, h, i) for i, (w, h) in enumerate(sizes)]
    groups = assign_buckets(examples, make_buckets(64, 2))
    members = sorted(sorted(v) for v in groups.values())
    assert members == [[0, 1, 6, 7], [2, 3], [4, 5]]
    wide = next(b for b, v in groups.items() if 2 in v)
    assert wide.width > wide.height

    schedule = BatchSchedule(groups, batch_size=2, seed=3)
    for epoch in range(3):
        batches = schedule.epoch_batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(8))
        for batch in batches:
            assert len({next(k for k, v in groups.items() if i in v) for i in batch}) == 1
    assert schedule.epoch_batches(0) != schedule.epoch_batches(1)
    assert BatchSchedule(groups, 2, 3).batch(5) == schedule.batch(5)


# --- presets and memory plans ---------------------------------------------------------------------


def test_presets_are_valid_and_build_requests(tmp_path):
    assert list(presets.PRESETS) == ["Beginner", "Standard", "Expert"]
    for preset in presets.PRESETS.values():
        assert presets.validate_hyperparameters(preset.steps, preset.rank, preset.learning_rate, preset.resolution) == []
        assert preset.description
    fields = presets.preset_request(
        "beginner", dataset_dir=tmp_path, output_dir=tmp_path, work_dir=tmp_path, trigger="ohwx", steps=500
    )
    req = TrainRequest(**fields)
    assert (req.steps, req.rank, req.learning_rate, req.resolution) == (500, 16, 1e-4, 512)
    with pytest.raises(TypeError):
        presets.preset_request("Expert", ranks=4)
    with pytest.raises(KeyError):
        presets.preset_request("Wizard")
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.PRESETS["Expert"].steps = 1


def test_hyperparameter_validation_messages():
    errors = presets.validate_hyperparameters(0, 12, 0.5, 700)
    assert len(errors) == 4
    assert any("Steps" in e for e in errors) and any("power of two" in e for e in errors)
    assert any("Learning rate" in e for e in errors) and any("multiple of 64" in e for e in errors)
    assert presets.validate_hyperparameters(20000, 256, 1e-2, 2048) == []
    assert presets.validate_hyperparameters(20001, 512, 0, 128) != []
    assert presets.validate_hyperparameters(10, 4, 1e-3, 64) != []
    assert presets.validate_hyperparameters(10, 4, 1e-3, 64, tiny=True) == []
    assert presets.validate_hyperparameters(10, 4, 1e-3, 17, tiny=True) != []


def test_memory_plan_picks_modes_from_free_memory():
    GB = memory.GB
    cpu = memory.plan_for("auto", None, 512)
    assert (cpu.mode, cpu.base_quant, cpu.gradient_checkpointing) == ("full", None, False)
    assert "no GPU" in cpu.explain()
    assert memory.plan_for("auto", 80 * GB, 768).mode == "full"
    assert memory.plan_for("auto", 80 * GB, 1024).mode == "full"
    assert memory.plan_for("auto", 48 * GB, 1024).mode == "checkpointing"
    assert memory.plan_for("auto", 40 * GB, 768).mode == "checkpointing"
    assert memory.plan_for("auto", 24 * GB, 768).mode == "8bit"
    assert memory.plan_for("auto", 20 * GB, 512).mode == "8bit"
    assert memory.plan_for("auto", 16 * GB, 512).mode == "nf4"
    assert memory.plan_for("auto", 12 * GB, 768).mode == "nf4"
    assert memory.plan_for("auto", 6 * GB, 768).mode == "lowvram"  # blocks one at a time on the GPU
    tight = memory.plan_for("auto", 3 * GB, 768)
    assert tight.mode == "lowvram" and "may still run out" in tight.explain()
    plan = memory.plan_for("auto", 24 * GB, 768)
    assert plan.base_quant == "8bit" and plan.gradient_checkpointing and plan.cache_latents
    assert plan.explain().startswith("Memory mode '8bit'") and "24.0 GB" in plan.explain()
    assert memory.plan_for("nf4", None, 512).base_quant == "nf4"
    assert [memory.lighter_mode(m) for m in ("full", "checkpointing", "offload", "8bit", "fp8", "nf4", "lowvram")] == [
        "checkpointing", "8bit", "8bit", "nf4", "nf4", "lowvram", None,
    ]
    with pytest.raises(EngineError):
        memory.plan_for("huge", None, 512)


def test_quantized_plan_needs_its_library(monkeypatch):
    monkeypatch.setattr(memory, "library_available", lambda name: False)
    with pytest.raises(EngineError, match="bitsandbytes"):
        memory.require_support(memory.plan_for("nf4", None, 512), "cuda")
    with pytest.raises(EngineError, match="torchao"):
        memory.quantization_config(memory.plan_for("fp8", None, 512))
    memory.require_support(memory.plan_for("checkpointing", None, 512), "cpu")  # nothing to check
