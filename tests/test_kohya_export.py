"""The kohya/BFL export on the tiny Flux: double blocks loaded back through diffusers' own kohya loader,
single blocks checked by layout and weight update (diffusers' loader splits them with FLUX.1's real 3072
widths; the full round trip, single blocks included, runs at that width in tests/test_wide_loras.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from peft import LoraConfig
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.engines.base import TrainRequest
from lora_studio.engines.builtin.tiny import build_tiny_flux
from lora_studio.progress import NullReporter
from lora_studio.training.kohya_export import to_kohya
from lora_studio.training.trainer import train_lora
from tests.lora_factory import probe_transformer

RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices; threads only fight other processes
    try:
        tmp = tmp_path_factory.mktemp("kohya")
        data = tmp / "data"
        data.mkdir()
        for i in range(2):
            rgb = np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(data / f"{i}.png")
        req = TrainRequest(
            dataset_dir=data, output_dir=tmp / "out", work_dir=tmp / "work", trigger="ohwx", steps=6,
            rank=RANK, alpha=ALPHA, learning_rate=1e-2, resolution=48, checkpoint_every=0, sample_every=0,
        )
        result = train_lora(build_tiny_flux(), req, NullReporter())
    finally:
        torch.set_num_threads(threads)
    return result


def probe(transformer) -> torch.Tensor:
    return probe_transformer(transformer, side=8, tokens=6, timestep=0.3, seed=3)


def test_double_blocks_round_trip_through_diffusers_kohya_loader(trained, tmp_path):
    full = load_file(str(trained.lora_path))
    double = {k: v for k, v in full.items() if k.startswith("transformer.transformer_blocks.")}
    assert double and len(double) < len(full)

    # Reference: the same (double-block) LoRA in diffusers format, with its alpha as metadata.
    modules = sorted({k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in double})
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=modules).to_dict()
    FluxPipeline.save_lora_weights(
        str(tmp_path), transformer_lora_layers={k.removeprefix("transformer."): v for k, v in double.items()},
        transformer_lora_adapter_metadata=config, weight_name="double.safetensors",
    )
    reference = build_tiny_flux()
    base = probe(reference.transformer)
    reference.load_lora_weights(str(tmp_path), weight_name="double.safetensors")
    expected = probe(reference.transformer)
    assert (expected - base).abs().max() > 1e-3  # the LoRA does something

    kohya = to_kohya(double, ALPHA, RANK)
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in kohya
    assert all(k.startswith("lora_unet_double_blocks_0_") for k in kohya)
    converted = FluxPipeline.lora_state_dict(dict(kohya))
    assert set(converted) == set(double)

    exported = build_tiny_flux()
    exported.load_lora_weights(dict(kohya))
    torch.testing.assert_close(probe(exported.transformer), expected, atol=1e-5, rtol=1e-5)


def test_kohya_names_and_fused_layout(trained):
    """The layout a kohya reader sees, at tiny width; loading single blocks back needs the real width
    (test_wide_loras.py)."""
    full = {k.removeprefix("transformer."): v for k, v in load_file(str(trained.lora_path)).items()}
    kohya = to_kohya(full, ALPHA, RANK)
    names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in kohya}
    assert names == {
        "lora_unet_double_blocks_0_" + n
        for n in ("img_attn_qkv", "img_attn_proj", "txt_attn_qkv", "txt_attn_proj", "img_mlp_0", "img_mlp_2", "txt_mlp_0", "txt_mlp_2")
    } | {"lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_0_linear2"}

    def delta(name):  # the weight update a kohya-reading tool applies
        down, up = kohya[name + ".lora_down.weight"], kohya[name + ".lora_up.weight"]
        return up @ down * (kohya[name + ".alpha"].item() / down.shape[0])

    def part(module):
        return full[module + ".lora_B.weight"] @ full[module + ".lora_A.weight"] * (ALPHA / RANK)

    single = "single_transformer_blocks.0."
    linear1 = torch.cat([part(single + m) for m in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
    torch.testing.assert_close(delta("lora_unet_single_blocks_0_linear1"), linear1)
    assert kohya["lora_unet_single_blocks_0_linear1.lora_down.weight"].shape == (4 * RANK, 32)
    assert kohya["lora_unet_single_blocks_0_linear1.alpha"].item() == 4 * ALPHA
    torch.testing.assert_close(delta("lora_unet_single_blocks_0_linear2"), part(single + "proj_out"))
    qkv = torch.cat([part(f"transformer_blocks.0.attn.add_{c}_proj") for c in "qkv"])
    torch.testing.assert_close(delta("lora_unet_double_blocks_0_txt_attn_qkv"), qkv)
    torch.testing.assert_close(delta("lora_unet_double_blocks_0_img_mlp_2"), part("transformer_blocks.0.ff.net.2"))

    # Without MLP LoRAs, linear1 keeps its BFL width with a zero proj_mlp part.
    attention_only = {k: v for k, v in full.items() if ".proj_mlp." not in k and ".proj_out." not in k}
    padded = to_kohya(attention_only, ALPHA, RANK)
    up = padded["lora_unet_single_blocks_0_linear1.lora_up.weight"]
    assert up.shape == (3 * 32 + 4 * 32, 4 * RANK) and not up[96:].any()
    with pytest.raises(ValueError, match="rank"):
        to_kohya(full, ALPHA, RANK * 2)
    with pytest.raises(ValueError, match="Cannot export"):
        to_kohya({"proj_out.lora_A.weight": torch.zeros(RANK, 32)}, ALPHA, RANK)


def test_trainer_writes_the_kohya_file(trained):
    path = trained.extra_files["kohya"]
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    # the scale is folded into the weights (alpha = rank); the trained alpha is recorded beside it
    assert meta["ss_network_dim"] == str(RANK) and float(meta["ss_network_alpha"]) == RANK
    assert float(meta["lora_studio_trained_alpha"]) == ALPHA
    assert meta["ss_trigger"] == "ohwx"
    assert keys == set(to_kohya(load_file(str(trained.lora_path)), RANK, RANK))
