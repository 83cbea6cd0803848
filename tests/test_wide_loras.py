"""LoRA files at FLUX.1-dev's real widths, on the wide Flux: the kohya/BFL export round trip (single blocks
included: diffusers' kohya loader hard-codes 3072-wide single blocks, which is this width), imports of
ai-toolkit- and ComfyUI-named files, refusal of a wrong-width file, hot-swap and LRU eviction.

Outputs are compared through a cheap probe of the transformer (its raw output on fixed inputs, which is
what every denoising step of an image computes) and, for the export, through the weight updates too.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import load_file, save_file

from lora_studio.engines.base import EngineError, LoraWeight
from lora_studio.engines.lora.formats import inspect_lora
from lora_studio.engines.lora.targets import target_modules
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.training.kohya_export import to_kohya
from tests.lora_factory import make_lora, make_tiny_lora, probe_transformer

pytestmark = pytest.mark.wide
RANK, ALPHA = 4, 8.0
MAGNITUDE = 0.02  # random LoRA weights of this size change the wide model's output by a few percent
TOLERANCE = dict(atol=2e-4, rtol=1e-4)  # fp32, differently ordered sums of the same update


def probe(transformer) -> torch.Tensor:
    return probe_transformer(transformer, side=4, tokens=6, timestep=0.4, seed=5)


@pytest.fixture(scope="module")
def files(wide_pipe, tmp_path_factory):
    """Diffusers-format LoRAs for the wide transformer: every trainable target (double and single blocks,
    MLPs included), alpha != rank; and two attention-only ones with alpha == rank for swapping."""
    folder = tmp_path_factory.mktemp("wide_loras")
    transformer = wide_pipe.transformer
    return {
        "full": make_lora(transformer, folder / "full.safetensors", target_modules(transformer, True), seed=1,
                          rank=RANK, alpha=ALPHA, magnitude=MAGNITUDE),
        "a": make_lora(transformer, folder / "a.safetensors", target_modules(transformer, False), seed=2,
                       rank=RANK, magnitude=MAGNITUDE),
        "b": make_lora(transformer, folder / "b.safetensors", target_modules(transformer, False), seed=3,
                       rank=RANK, magnitude=MAGNITUDE),
        "c": make_lora(transformer, folder / "c.safetensors", target_modules(transformer, False), seed=4,
                       rank=RANK, magnitude=MAGNITUDE),
    }


@pytest.fixture(scope="module")
def base(wide_pipe):
    return probe(wide_pipe.transformer)


def loaded_probe(pipe, source, **kwargs) -> torch.Tensor:
    pipe.load_lora_weights(source, adapter_name="probe", **kwargs)
    try:
        return probe(pipe.transformer)
    finally:
        pipe.unload_lora_weights()


def test_kohya_export_round_trips_through_diffusers_with_single_blocks(wide, files, base, tmp_path):
    diffusers_state = load_file(str(files["full"]))
    kohya = to_kohya(diffusers_state, ALPHA, RANK)
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in kohya
    assert kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 3072 + 12288, 4 * RANK)

    # diffusers' own kohya loader splits every fused layer back, single blocks included...
    converted = FluxPipeline.lora_state_dict(dict(kohya))
    converted = converted[0] if isinstance(converted, tuple) else converted
    assert set(converted) == set(diffusers_state)
    for key in diffusers_state:  # ...into the same weight updates (alpha/rank baked into the weights)
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            expected = diffusers_state[module + ".lora_B.weight"] @ diffusers_state[key] * (ALPHA / RANK)
            got = converted[module + ".lora_B.weight"] @ converted[key]
            torch.testing.assert_close(got, expected, **TOLERANCE)

    # ...and the same transformer output as the diffusers file.
    kohya_path = tmp_path / "kohya.safetensors"
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(kohya_path))
    expected = loaded_probe(wide, str(files["full"]))
    assert (expected - base).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(loaded_probe(wide, str(kohya_path)), expected, **TOLERANCE)


def comfy_names(kohya: dict) -> dict:
    """ComfyUI's naming of the same tensors: diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight."""
    renamed = {}
    for key, tensor in kohya.items():
        module, _, suffix = key.partition(".")
        kind, _, rest = module.removeprefix("lora_unet_").partition("_blocks_")
        index, _, layer = rest.partition("_")
        layer = {"img_attn_qkv": "img_attn.qkv", "txt_attn_qkv": "txt_attn.qkv", "img_attn_proj": "img_attn.proj",
                 "txt_attn_proj": "txt_attn.proj", "img_mlp_0": "img_mlp.0", "img_mlp_2": "img_mlp.2",
                 "txt_mlp_0": "txt_mlp.0", "txt_mlp_2": "txt_mlp.2"}.get(layer, layer)
        renamed[f"diffusion_model.{kind}_blocks.{index}.{layer}.{suffix}"] = tensor
    return renamed


def test_ai_toolkit_and_comfyui_files_import_at_this_width(wide, files, base, tmp_path):
    manager = ModelManager(model="wide-test", loader=lambda *_: wide)
    diffusers_state = load_file(str(files["full"]))
    aitk = tmp_path / "aitk.safetensors"  # diffusers names, no peft metadata: alpha is taken as the rank
    save_file(load_file(str(files["a"])), str(aitk))
    comfy = tmp_path / "comfy.safetensors"
    save_file(comfy_names(to_kohya(diffusers_state, ALPHA, RANK)), str(comfy))
    assert inspect_lora(comfy, wide.transformer).format == "comfyui"
    assert inspect_lora(aitk, wide.transformer).format == "diffusers"

    manager.apply_loras([LoraWeight("comfy", 1.0, comfy)])
    comfy_out = probe(wide.transformer)
    manager.apply_loras([LoraWeight("aitk", 1.0, aitk)])
    aitk_out = probe(wide.transformer)
    manager.unload()
    wide.unload_lora_weights()
    assert (comfy_out - base).abs().max() > 1e-3 and (aitk_out - base).abs().max() > 1e-3
    torch.testing.assert_close(comfy_out, loaded_probe(wide, str(files["full"])), **TOLERANCE)
    torch.testing.assert_close(aitk_out, loaded_probe(wide, str(files["a"])), **TOLERANCE)


def test_a_lora_of_another_width_is_refused_in_words(wide, tmp_path):
    tiny = make_tiny_lora(tmp_path / "tiny.safetensors")
    manager = ModelManager(model="wide-test", loader=lambda *_: wide)
    with pytest.raises(EngineError, match="does not fit the loaded Flux model: layer .* is 3072 wide, the LoRA expects 32"):
        manager.apply_loras([LoraWeight("tiny", 1.0, tiny)])
    assert manager.adapter_names() == []


def test_hot_swap_at_this_width_matches_plain_loading(wide, files, base):
    expected = {name: loaded_probe(wide, str(files[name])) for name in ("a", "b")}
    manager = ModelManager(model="wide-test", loader=lambda *_: wide, hotswap=True, hotswap_rank=8)
    for name in ("a", "b", "a"):
        manager.apply_loras([LoraWeight(name, 1.0, files[name])])
        assert manager.hot_lora() == files[name]
        torch.testing.assert_close(probe(wide.transformer), expected[name], **TOLERANCE)
    assert manager.adapter_names() == [] and manager.load_count == 1  # one slot, weights replaced in place
    manager.apply_loras([])
    torch.testing.assert_close(probe(wide.transformer), base, atol=0, rtol=0)


def test_lru_eviction_at_this_width(wide, files):
    sizes = {name: files[name].stat().st_size for name in ("a", "b", "c")}
    manager = ModelManager(model="wide-test", loader=lambda *_: wide, adapter_budget_bytes=sum(sizes.values()) - 1)
    for name in ("a", "b", "a", "c"):  # touching a again leaves b the least recently used
        manager.apply_loras([LoraWeight(name, 1.0, files[name])])
    assert manager.adapter_names() == ["lora_a", "lora_c"]
    assert set(wide.transformer.peft_config) == {"lora_a", "lora_c"}
