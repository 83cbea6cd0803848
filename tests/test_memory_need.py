"""Memory plans computed from the model: parameter counts on the meta device, the public figures they
must land on, the activation estimate measured again on the wide model, and the plan in words."""
from __future__ import annotations

import re

import pytest
import torch
from diffusers import FluxPipeline

from lora_studio.engines.memory import need as memory_need
from lora_studio.engines.memory import plan as memory
from lora_studio.engines.lora.targets import target_modules
from lora_studio.sizes import GB
from tests.activation_probe import saved_elements_per_token

BLOG = dict(rank=4, train_mlp=False)  # diffusers' flux-qlora blog: rank 4, attention only, 8-bit Adam


def need_gb(mode: str, resolution: int = 512, **lora) -> float:
    return memory.plan_need(mode, resolution, **lora).total / GB


def test_counts_come_from_flux_dev_on_the_meta_device_once():
    counts = memory_need.transformer_counts()
    assert counts is memory_need.transformer_counts()  # cached: built once
    assert counts.total.total == pytest.approx(11.9e9, rel=0.01)  # FLUX.1-dev's 12 B transformer
    assert (counts.hidden, counts.double_blocks, counts.single_blocks) == (3072, 19, 38)
    encoders = memory_need.encoder_counts()
    assert encoders.whole == pytest.approx(4.76e9 + 123e6 + 84e6, rel=0.01)  # T5-XXL + CLIP-L + VAE
    # the LoRA's size is counted from the recipe's own targets: attention q, k, v, out (+ MLPs)
    assert counts.lora_per_rank[False] == 19 * 8 * 2 * 3072 + 38 * 3 * 2 * 3072
    assert counts.lora_per_rank[True] > 2 * counts.lora_per_rank[False]


def test_weights_per_mode_follow_bytes_per_parameter():
    weights = {mode: memory.plan_need(mode, 512).weights / GB for mode in memory.LADDER}
    assert weights["full"] == weights["checkpointing"] == pytest.approx(23.8, abs=0.1)  # bf16
    assert weights["8bit"] == pytest.approx(11.9, abs=0.1)  # int8 + a scale per row
    assert weights["nf4"] == pytest.approx(6.7, abs=0.1)  # 0.5 B + an fp32 absmax per 64 weights
    assert weights["lowvram"] < 1.0  # outside the blocks, the quantization state and two blocks


def test_public_figures_at_512():
    """diffusers' flux-qlora blog (RTX 4090, cached latents and embeddings, checkpointing, 8-bit Adam):
    NF4 ~9 GB, bf16 LoRA ~26 GB. Our default recipe (rank 16, MLPs too) plans within half a GB of them."""
    assert 9.0 <= need_gb("nf4", **BLOG) <= 10.0
    assert 26.0 <= need_gb("checkpointing", **BLOG) <= 27.0
    assert 8.5 <= need_gb("nf4") <= 10.5
    assert 25.5 <= need_gb("checkpointing") <= 27.5
    assert need_gb("lowvram") <= 8.0  # the goal for the lightest mode


def test_needs_grow_with_pixels_and_fall_down_the_ladder():
    for resolution in (512, 768, 1024):
        needs = [need_gb(mode, resolution) for mode in memory.LADDER]
        assert needs == sorted(needs, reverse=True), resolution
    for mode in memory.LADDER:
        small, large = memory.plan_need(mode, 512), memory.plan_need(mode, 1024)
        assert large.activations > 2.5 * small.activations  # (64^2 + 512) / (32^2 + 512) = 3 x the tokens
        assert large.weights == small.weights
    full, checkpointed = memory.plan_need("full", 1024), memory.plan_need("checkpointing", 1024)
    assert full.activations > 10 * checkpointed.activations  # every block's activations vs one block's


def test_explain_names_the_numbers():
    text = memory.plan_for("nf4", None, 512).explain()
    numbers = re.search(r"weights ([\d.]+) GB \+ LoRA and optimizer ([\d.]+) GB \+ activations ([\d.]+) GB \+ "
                        r"CUDA runtime ([\d.]+) GB = ([\d.]+) GB at 512 px", text)
    assert numbers, text
    parts = [float(n) for n in numbers.groups()]
    assert sum(parts[:4]) == pytest.approx(parts[4], abs=0.11)
    assert parts[0] == pytest.approx(6.7, abs=0.05)
    auto = memory.plan_for("auto", 8 * GB, 512)
    assert auto.mode == "lowvram" and auto.offload_blocks and "8.0 GB" in auto.explain()


def test_plan_text_for_the_training_tab(studio):
    tiny = studio.training.memory_plan(512, "nf4", 16)
    assert tiny.startswith("Tiny built-in model") and "FLUX.1-dev" not in tiny  # its own words, not FLUX.1's plan
    studio.training.tiny = False  # the local engine's words (on this machine: no GPU)
    nf4 = studio.training.memory_plan(512, "nf4", 16)
    assert "Memory mode 'nf4'" in nf4 and re.search(r"= \d+\.\d GB at 512 px", nf4)
    auto = studio.training.memory_plan(512, "auto", 16)
    assert "No GPU here" in auto and all(mode in auto for mode in memory.LADDER)
    assert studio.training.memory_plan(1024, "lowvram", 32) != studio.training.memory_plan(512, "lowvram", 16)
    assert "Unknown memory mode" in studio.training.memory_plan(512, "turbo", 16)
    assert "whole numbers" in studio.training.memory_plan("big", "nf4", 16)
    assert studio.training.memory_modes()[-1] == "lowvram"
    studio.training.remote = True  # a Replicate engine trains on its own GPUs
    assert "does not apply" in studio.training.memory_plan(512, "nf4", 16)


def flux1_forward(transformer, side: int, tokens: int, generator: torch.Generator):
    """A FLUX.1 forward with inputs that need gradients, as every block after the first LoRA sees them."""
    config = transformer.config
    return transformer(
        hidden_states=torch.randn(1, side * side, config.in_channels, generator=generator).requires_grad_(),
        encoder_hidden_states=torch.randn(1, tokens, config.joint_attention_dim, generator=generator).requires_grad_(),
        pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
        timestep=torch.tensor([0.4]), guidance=torch.tensor([1.0]), txt_ids=torch.zeros(tokens, 3),
        img_ids=FluxPipeline._prepare_latent_image_ids(1, side, side, "cpu", torch.float32), return_dict=False)


@pytest.mark.wide
def test_activation_estimate_matches_what_autograd_saves_at_real_width(wide):
    for train_mlp in (False, True):
        measured = saved_elements_per_token(wide.transformer, train_mlp, flux1_forward)
        for kind, value in measured.items():
            assert value == pytest.approx(memory_need.ACTIVATION_ELEMENTS[(kind, train_mlp)], rel=0.1), (kind, train_mlp)


def test_the_readme_table_shows_the_planned_numbers():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)`[^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \|$", readme, flags=re.M)
    assert {mode for mode, _, _ in rows} == set(memory.LADDER)
    for mode, at_512, at_1024 in rows:
        assert (float(at_512), float(at_1024)) == (round(need_gb(mode, 512), 1), round(need_gb(mode, 1024), 1))


def test_lowvram_loads_a_double_quantized_nf4_base(monkeypatch):
    import diffusers

    monkeypatch.setattr(memory, "library_available", lambda name: True)  # bitsandbytes is CUDA-only:
    monkeypatch.setattr(diffusers, "BitsAndBytesConfig", lambda **kwargs: kwargs)  # its config needs it too
    lowvram = memory.quantization_config(memory.plan_for("lowvram", None, 512))
    assert lowvram["load_in_4bit"] and lowvram["bnb_4bit_quant_type"] == "nf4" and lowvram["bnb_4bit_use_double_quant"]
    assert not memory.quantization_config(memory.plan_for("nf4", None, 512))["bnb_4bit_use_double_quant"]


def test_settings_and_the_cli_accept_exactly_the_modes_the_plan_knows():
    """config.MEMORY_MODES is the one list: each mode plans, is a setting and a CLI choice; others are refused."""
    from lora_studio.cli import build_parser
    from lora_studio.config import MEMORY_MODES, Settings
    from lora_studio.engines.base import EngineError

    for mode in MEMORY_MODES:
        assert memory.plan_for(mode, None, 512).mode == ("full" if mode == "auto" else mode)  # auto, no GPU: full
        assert Settings.from_env({}, memory_mode=mode).memory_mode == mode
        assert build_parser().parse_args(["jobs", "--memory-mode", mode]).memory_mode == mode
    for unknown in ("turbo", "FULL", ""):
        with pytest.raises(EngineError, match="Unknown memory mode"):
            memory.plan_for(unknown, None, 512)
        with pytest.raises(ValueError, match="Unknown memory mode"):
            Settings(memory_mode=unknown)
        with pytest.raises(SystemExit):
            build_parser().parse_args(["jobs", "--memory-mode", unknown])


def test_an_image_needs_what_the_speed_settings_size_the_gpu_for():
    """The inference need the speed settings' auto reads: weights counted, working memory with the image size."""
    bf16, int8 = memory_need.inference_need("bf16", 1024), memory_need.inference_need("8bit", 1024)
    assert bf16.transformer / GB == pytest.approx(23.8, rel=0.01) and int8.transformer / GB == pytest.approx(11.9, rel=0.01)
    assert bf16.encoders / GB == pytest.approx(9.94, rel=0.01)  # T5-XXL + CLIP-L + VAE in bf16
    assert 3.5 < bf16.working / GB < 4.5 and bf16.total == bf16.transformer + bf16.encoders + bf16.working
    assert memory_need.inference_need("bf16", 512).working < bf16.working
    assert bf16.fused_extra / GB == pytest.approx(4.3, rel=0.01)  # q, k, v of both streams in every block, bf16
    assert bf16.batch_extra > bf16.working - memory_need.RUNTIME_BYTES  # a Kontext edit carries the reference too
