"""FLUX.1-dev at its real widths on the CPU (one double and one single block): generation and training.

All wide tests share one pipeline build (conftest.wide_pipe) and keep their sizes small: one denoising
step, short prompts (max_sequence_length 16), 256 px for generation and 64 px for training, and one
latent/text cache for every training run. At these sizes a step costs what reading the 546 M weights
costs, whatever the resolution.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image
from safetensors.torch import load_file

from lora_studio.engines.memory import plan as memory
from lora_studio.engines.base import EngineError, TrainRequest
from lora_studio.progress import NullReporter
from lora_studio.training import block_offload, dataset
from lora_studio.training.trainer import train_lora
from tests.conftest import reset_pipe

pytestmark = pytest.mark.wide
SEQUENCE = 16
CPU_MODES = ("full", "checkpointing", "offload")  # "auto" is "full" on a CPU (checked by its plan)
CUDA_MODES = ("8bit", "fp8", "nf4", "lowvram")


def test_generation_at_256_is_finite_sized_and_deterministic(wide):
    final = {}

    def keep_latents(pipe, step, timestep, kwargs):
        final["latents"] = kwargs["latents"].clone()
        return kwargs

    def run(seed, **kwargs):
        return wide(prompt="a portrait photo", height=256, width=256, num_inference_steps=1,
                    max_sequence_length=SEQUENCE, generator=torch.Generator().manual_seed(seed), **kwargs).images

    image = run(1, output_type="np", callback_on_step_end=keep_latents)[0]
    assert image.shape == (256, 256, 3) and np.isfinite(image).all()
    assert wide.numpy_to_pil(image[None])[0].size == (256, 256)
    assert torch.equal(run(1, output_type="latent"), final["latents"])  # same seed, same latents
    assert not torch.equal(run(2, output_type="latent"), final["latents"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide_data")
    for i in range(2):
        rgb = np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def short_prompts(monkeypatch):
    monkeypatch.setattr(dataset, "MAX_SEQUENCE_LENGTH", SEQUENCE)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("wide_work")  # shared: latents and text embeddings are encoded once


def wide_request(images, work_dir, output_dir, mode: str) -> TrainRequest:
    return TrainRequest(
        dataset_dir=images, output_dir=output_dir, work_dir=work_dir, trigger="ohwx", steps=2, rank=4, alpha=8.0,
        learning_rate=1e-3, resolution=64, checkpoint_every=0, sample_every=0, memory_mode=mode, resume=False,
    )


@pytest.fixture(scope="module")
def trained(wide_pipe, images, work_dir, tmp_path_factory):
    """`trained(mode)`: the TrainResult of two steps in that mode, trained on first use and kept for the
    module, so each test gets the LoRA it compares against whichever tests ran before it (or none)."""
    results = {}
    out = tmp_path_factory.mktemp("wide_trained")

    def train(mode: str):
        if mode not in results:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(dataset, "MAX_SEQUENCE_LENGTH", SEQUENCE)
                try:
                    results[mode] = train_lora(wide_pipe, wide_request(images, work_dir, out / mode, mode),
                                               NullReporter())
                finally:
                    reset_pipe(wide_pipe)
        return results[mode]

    return train


def test_two_training_steps_in_every_cpu_mode_give_the_same_lora(wide, trained):
    auto = memory.plan_for_pipeline("auto", wide, torch.device("cpu"), 64)
    assert (auto.mode, auto.gradient_checkpointing, auto.base_quant) == ("full", False, None)
    for mode in CPU_MODES:
        result = trained(mode)
        assert math.isfinite(result.final_loss) and result.steps == 2
        assert result.metadata["memory_mode"] == mode
    reference = load_file(str(trained("full").lora_path))
    assert any(".single_transformer_blocks." in key for key in reference)
    for mode in CPU_MODES[1:]:  # checkpointing recomputes the same numbers: the same LoRA, bit for bit
        assert trained(mode).final_loss == trained("full").final_loss
        weights = load_file(str(trained(mode).lora_path))
        assert all(torch.equal(weights[key], reference[key]) for key in reference)


def test_cuda_only_modes_are_refused_in_words_on_the_cpu(wide, images, tmp_path):
    for mode in CUDA_MODES:
        with pytest.raises(EngineError, match=f"Memory mode '{mode}' quantizes the base model and needs an NVIDIA GPU"):
            train_lora(wide, wide_request(images, tmp_path, tmp_path / mode, mode), NullReporter())
    assert not any(p.requires_grad for p in wide.transformer.parameters())


def test_block_offloaded_training_step_runs_and_matches(wide, images, work_dir, tmp_path, short_prompts, trained,
                                                        monkeypatch):
    """lowvram's block offloading, on the CPU: released blocks hold empty tensors, so a step that read
    one would fail; the LoRA comes out the same as with checkpointing alone."""
    expected = trained("checkpointing")  # trained first, before the planner is patched below
    plans = []

    def with_offloaded_blocks(mode, pipe, device, resolution, rank, train_mlp):
        plan = replace(memory.plan_for("checkpointing", None, resolution, rank, train_mlp), offload_blocks=True)
        plans.append(plan)
        return plan

    attached = []
    original_attach = block_offload.BlockOffloader.attach
    monkeypatch.setattr("lora_studio.training.run.plan_for_pipeline", with_offloaded_blocks)
    monkeypatch.setattr(block_offload.BlockOffloader, "_released", lambda self, m: torch.empty(0, dtype=m.dtype))
    monkeypatch.setattr(block_offload.BlockOffloader, "attach", lambda self: attached.append(self) or original_attach(self))
    result = train_lora(wide, wide_request(images, work_dir, tmp_path, "checkpointing"), NullReporter())
    assert plans and attached and attached[0].onloads >= 2 * 2  # two blocks, two steps, both directions
    assert math.isfinite(result.final_loss)
    assert result.final_loss == expected.final_loss
    reference = load_file(str(expected.lora_path))
    weights = load_file(str(result.lora_path))
    assert all(torch.equal(weights[key], reference[key]) for key in reference)
    assert all(p.numel() > 0 for p in wide.transformer.parameters())  # every weight is back


def test_the_trainers_kohya_file_loads_single_blocks_through_diffusers(trained):
    result = trained("checkpointing")
    diffusers_keys = set(load_file(str(result.lora_path)))
    converted = FluxPipeline.lora_state_dict(load_file(str(result.extra_files["kohya"])))
    converted = converted[0] if isinstance(converted, tuple) else converted
    assert set(converted) == diffusers_keys
    assert any(key.startswith("transformer.single_transformer_blocks.0.proj_mlp") for key in converted)
