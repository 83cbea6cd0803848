"""Training a FLUX.2 [klein] LoRA on the tiny Klein, on the CPU: the same trainer as FLUX.1 on the base
checkpoint, its layout (patchified latents, 4-axis ids, Qwen3 text, shifted sigmas), files that load in
diffusers' Flux2KleinPipeline and through its kohya converter, resume, and a worker process."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux2_lora_to_diffusers
from safetensors.torch import load_file

from lora_studio.engines.builtin.klein import build_tiny_klein, tiny_klein_components
from lora_studio.engines.family import KLEIN
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.progress import NullReporter
from lora_studio.training.layouts import KleinLayout, layout_for
from lora_studio.training.lease import PipelineLease
from lora_studio.training.trainer import train_lora, train_on_manager
from lora_studio.training.workers import WorkerPlan, train_in_workers
from tests.klein_kit import probe_klein
from tests.test_training import TRIGGER, ScriptedReporter, request

PROMPT = f"{TRIGGER}, portrait photo"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on the manager's klein-tiny: it trains the base, whose samples are kept."""
    tmp = tmp_path_factory.mktemp("klein-trained")
    seen = []
    manager = ModelManager("klein-tiny", device="cpu")
    req = request(tmp, steps=30, sample_every=15, checkpoint_every=10, sample_prompt=PROMPT, learning_rate=5e-3)
    reporter = NullReporter()
    result = train_on_manager(manager, req, reporter, sample_scorer=lambda image: seen.append(image.copy()) or 1.0)
    return dict(request=req, result=result, reporter=reporter, samples=seen, manager=manager)


def test_the_run_trains_the_base_checkpoint_and_says_what_it_is(trained):
    meta, logs = trained["result"].metadata, trained["reporter"].logs
    assert meta["family"] == "flux2-klein" and meta["base_model"] == "klein-tiny-base"
    assert meta["weighting_scheme"] == "none" and meta["timestep_shift"] == [0.5, 1.15]
    assert logs[0].startswith("Training a FLUX.2 [klein] LoRA")
    losses = [v for _, v in trained["reporter"].metrics["loss"]]
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10])  # it learns
    # every bucket is a multiple of the family's 16 px (VAE /8, 2x2 patches)
    assert all(int(side) % 16 == 0 for bucket in meta["buckets"] for side in bucket.split("x"))
    assert trained["manager"].running() == "base"  # handed back as it came, still the base's turn


def test_the_diffusers_file_loads_in_flux2klein_and_draws_the_last_sample(trained):
    req = trained["request"]
    fresh = build_tiny_klein(distilled=False)
    fresh.set_progress_bar_config(disable=True)
    before = probe_klein(fresh.transformer)
    fresh.load_lora_weights(str(req.output_dir), weight_name="lora.safetensors", adapter_name="mine")
    assert (probe_klein(fresh.transformer) - before).abs().max() > 1e-4
    # The last sample was drawn with CFG against the cached "" embedding (the base is undistilled); the
    # fresh pipeline encodes both itself and must draw the same picture.
    image = fresh(prompt=PROMPT, height=64, width=64, num_inference_steps=4, guidance_scale=KLEIN.recipe.sample_guidance,
                  generator=torch.Generator().manual_seed(req.seed)).images[0]
    assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(trained["samples"][-1], dtype=np.int16)).max() <= 1


def test_the_kohya_file_reads_back_through_diffusers_with_every_key_and_the_same_update(trained):
    folder = trained["request"].output_dir
    diffusers_state = load_file(str(folder / "lora.safetensors"))
    kohya = load_file(str(folder / "lora_kohya.safetensors"))
    leftover = dict(kohya)
    converted = _convert_kohya_flux2_lora_to_diffusers(leftover)
    assert leftover == {} and set(converted) == set(diffusers_state)
    for key in converted:
        if key.endswith("lora_A.weight"):
            up = key.replace("lora_A", "lora_B")
            torch.testing.assert_close(converted[up] @ converted[key], diffusers_state[up] @ diffusers_state[key],
                                       atol=1e-6, rtol=1e-5)
    one, two = (build_tiny_klein(distilled=False) for _ in range(2))
    one.load_lora_weights(str(folder / "lora.safetensors"), adapter_name="d")
    two.load_lora_weights(str(folder / "lora_kohya.safetensors"), adapter_name="k")
    torch.testing.assert_close(probe_klein(one.transformer), probe_klein(two.transformer), atol=1e-5, rtol=1e-4)
    card = (folder / "README.md").read_text()
    assert card.startswith(f"# {TRIGGER} - FLUX.2 [klein] LoRA") and "Flux2KleinPipeline" in card


def test_the_layout_is_the_pipelines_own(tmp_path):
    """The cached latent is what Flux2KleinPipeline encodes a reference into, and the noise level of a u is
    the family's recipe at the image's token count."""
    pipe = build_tiny_klein(distilled=False)
    layout = layout_for(pipe)
    assert isinstance(layout, KleinLayout)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    mine = layout.encode_latent(pipe.vae, pixels)
    assert torch.equal(mine, pipe._encode_vae_image(pixels, generator=None))
    u = torch.tensor([0.1, 0.5, 0.9])
    sigmas, timesteps = layout.noise_levels(u, torch.zeros(3, 4, 16, 32))
    expected = torch.tensor([KLEIN.training_sigma(float(x), 16 * 32) for x in u])
    torch.testing.assert_close(sigmas, expected) and torch.testing.assert_close(timesteps, expected)
    text = layout.encode_text(pipe, "a dog", "cpu", 16)
    embeds, ids = pipe.encode_prompt("a dog", device="cpu", max_sequence_length=16)
    assert torch.equal(text["prompt_embeds"], embeds[0]) and torch.equal(text["text_ids"], ids[0])


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path):
    pipe = build_tiny_klein(distilled=False)
    straight = request(tmp_path / "a", steps=6, checkpoint_every=2)
    train_lora(pipe, straight, NullReporter())
    crashed = request(tmp_path / "b", dataset_dir=straight.dataset_dir, steps=6, checkpoint_every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lora(pipe, crashed, ScriptedReporter(after=3, error=RuntimeError))
    reporter = NullReporter()
    train_lora(pipe, crashed, reporter)
    assert any("Resumed from step_000002" in line for line in reporter.logs)
    a, b = (load_file(str(r.output_dir / "lora.safetensors")) for r in (straight, crashed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_mode_trains_the_same_steps(tmp_path):
    pipe = build_tiny_klein(distilled=False)
    plain = request(tmp_path / "a", steps=3, memory_mode="full")
    ckpt = request(tmp_path / "b", dataset_dir=plain.dataset_dir, steps=3, memory_mode="checkpointing")
    train_lora(pipe, plain, NullReporter())
    reporter = NullReporter()
    train_lora(pipe, ckpt, reporter)
    assert any("Memory mode 'checkpointing'" in line for line in reporter.logs)
    a, b = (load_file(str(r.output_dir / "lora.safetensors")) for r in (plain, ckpt))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not pipe.transformer.is_gradient_checkpointing  # handed back as it came


def test_the_lease_runs_qwen3_block_by_block_with_the_same_embeddings():
    pipe = build_tiny_klein()
    expected, _ = pipe.encode_prompt("a photo of mila", device="cpu", max_sequence_length=16)
    lease = PipelineLease(pipe)
    assert lease.big_text_encoder == "text_encoder"
    lease.move_encoders(torch.device("cpu"), blockwise_t5=True)
    assert lease.t5_blocks is not None and len(lease.t5_blocks.blocks) == len(pipe.text_encoder.model.layers)
    got, _ = pipe.encode_prompt("a photo of mila", device="cpu", max_sequence_length=16)
    assert torch.equal(got, expected)
    lease.move_encoders(torch.device("cpu"))
    assert lease.t5_blocks is None


def test_a_worker_process_trains_what_the_app_trains(tmp_path):
    """The isolated worker loads klein-tiny itself, swaps in its base, and ends on the same weights."""
    here = request(tmp_path / "here", steps=3)
    train_on_manager(ModelManager("klein-tiny", device="cpu"), here, NullReporter())
    there = request(tmp_path / "there", dataset_dir=here.dataset_dir, steps=3)
    result = train_in_workers(WorkerPlan(1, "cpu"), there, NullReporter(), model="klein-tiny", memory_mode="auto")
    assert result.metadata["family"] == "flux2-klein" and result.metadata["base_model"] == "klein-tiny-base"
    a, b = load_file(str(here.output_dir / "lora.safetensors")), load_file(str(result.lora_path))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_base_is_what_trains_even_when_pictures_ran_first():
    manager = ModelManager("klein-tiny", device="cpu")
    manager.text_to_image()
    base = tiny_klein_components(distilled=False)["transformer"]
    with manager.for_training() as pipe:
        assert torch.equal(probe_klein(pipe.transformer), probe_klein(base))
        assert not pipe.config.is_distilled
    assert manager.text_to_image().config.is_distilled
