"""The kohya/ComfyUI export for FLUX.2 [klein] (training/kohya_export.py, family "flux2-klein"): it reads back
through diffusers' own FLUX.2 kohya converter with every key consumed and the same update, with one strength
everywhere (alpha folded, alpha = rank). FLUX.2's converter hard-codes no width, so the tiny Klein runs the
whole round trip; the wide Klein (4 B's widths) runs it again."""
from __future__ import annotations

import pytest
import torch
from diffusers import Flux2KleinPipeline
from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux2_lora_to_diffusers
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_studio.engines.builtin.klein import build_tiny_klein
from lora_studio.engines.lora.formats import fold_lora, scaled_pairs
from lora_studio.engines.lora.targets import target_modules
from lora_studio.training.kohya_export import save_kohya, to_kohya
from tests.klein_kit import merged_copy, probe_klein
from tests.lora_factory import make_lora

RANK, ALPHA = 4, 8.0
KOHYA_NAMES = {"img_attn_qkv", "txt_attn_qkv", "img_attn_proj", "txt_attn_proj", "img_mlp_0", "img_mlp_2",
               "txt_mlp_0", "txt_mlp_2"}


def folded(path) -> dict[str, torch.Tensor]:
    """The file's layers with alpha/rank multiplied into B (what training/outputs.py exports)."""
    pairs, _, _ = scaled_pairs(path, family="flux2-klein")
    state = {}
    for module, (a, b) in pairs.items():
        state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"] = a, b
    return state


def round_trip(transformer_factory, tmp_path, magnitude: float) -> None:
    """Export a LoRA on every recipe target (alpha != rank) to kohya names and read it back three ways."""
    transformer = transformer_factory()
    source = make_lora(transformer, tmp_path / "klein.safetensors", target_modules(transformer, True), rank=RANK,
                       alpha=ALPHA, magnitude=magnitude)
    state = folded(source)
    kohya = to_kohya(state, RANK, RANK, family="flux2-klein")
    names = {k.split(".")[0] for k in kohya}
    assert {n.split("_", 5)[-1] for n in names if "_double_" in n} == KOHYA_NAMES
    assert {n.split("_", 5)[-1] for n in names if "_single_" in n} == {"linear1", "linear2"}
    for name in names:  # alpha = rank everywhere: a loader that ignores alpha applies the same update
        assert kohya[f"{name}.alpha"].item() == kohya[f"{name}.lora_down.weight"].shape[0]

    # 1. diffusers' own FLUX.2 kohya converter consumes every key and names every layer we trained
    leftover = dict(kohya)
    converted = _convert_kohya_flux2_lora_to_diffusers(leftover)
    assert leftover == {}
    assert set(converted) == {f"transformer.{k}" for k in state}
    for key, tensor in converted.items():  # the same update per layer (fused q|k|v split back exactly)
        module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
        if key.endswith("lora_A.weight"):
            mine = state[f"{module}.lora_B.weight"] @ state[f"{module}.lora_A.weight"]
            theirs = converted[key.replace("lora_A", "lora_B")] @ tensor
            torch.testing.assert_close(theirs, mine, atol=1e-6, rtol=1e-5)

    # 2. loaded through the pipeline, the kohya file gives what the original diffusers file gives
    from_diffusers, from_kohya = transformer_factory(), transformer_factory()
    Flux2KleinPipeline.load_lora_into_transformer(Flux2KleinPipeline.lora_state_dict(str(source)), from_diffusers,
                                                  metadata=Flux2KleinPipeline.lora_state_dict(
                                                      str(source), return_lora_metadata=True)[1])
    Flux2KleinPipeline.load_lora_into_transformer(Flux2KleinPipeline.lora_state_dict(dict(kohya)), from_kohya)
    expected = probe_klein(from_diffusers)
    assert (expected - probe_klein(transformer)).abs().max() > 1e-4  # the LoRA does something
    torch.testing.assert_close(probe_klein(from_kohya), expected, atol=1e-4, rtol=1e-4)
    # 3. and both equal merging the folded update by hand
    torch.testing.assert_close(probe_klein(merged_copy(transformer_factory, state)), expected, atol=1e-4, rtol=1e-4)


def test_tiny_klein_kohya_round_trip(tmp_path):
    round_trip(lambda: build_tiny_klein(False).transformer, tmp_path, magnitude=0.3)


@pytest.mark.wide
def test_wide_klein_kohya_round_trip(tmp_path):
    from diffusers import Flux2Transformer2DModel

    from lora_studio.engines.builtin.klein_wide import klein_transformer_config

    config = klein_transformer_config("klein-4b")

    def factory():
        state = torch.random.get_rng_state()
        torch.manual_seed(1)
        try:
            return Flux2Transformer2DModel(**config).eval().requires_grad_(False)
        finally:
            torch.random.set_rng_state(state)

    round_trip(factory, tmp_path, magnitude=0.02)


def test_save_kohya_names_klein_and_keeps_the_fused_alphas(tmp_path):
    transformer = build_tiny_klein(False).transformer
    source = make_lora(transformer, tmp_path / "klein.safetensors", target_modules(transformer, False), rank=RANK)
    path = save_kohya(tmp_path / "kohya.safetensors", folded(source), RANK, RANK, metadata={"ss_trigger": "ohwx"},
                      family="flux2-klein")
    with safe_open(str(path), "pt") as handle:
        meta, keys = handle.metadata(), set(handle.keys())
        qkv_alpha = handle.get_tensor("lora_unet_double_blocks_0_img_attn_qkv.alpha").item()
    assert meta["ss_base_model_version"] == "flux2_klein" and meta["ss_network_module"] == "networks.lora_flux_2"
    assert meta["ss_trigger"] == "ohwx" and meta["ss_network_dim"] == str(RANK)
    assert qkv_alpha == 3 * RANK  # three parts of rank r stacked: rank 3r, alpha 3r, the same scale 1
    assert not any("_mlp_" in k for k in keys)  # attention only: no MLP names
    assert "lora_unet_single_blocks_0_linear1.lora_down.weight" in keys
    with pytest.raises(ValueError, match="Cannot export"):
        to_kohya({"transformer.single_transformer_blocks.0.attn.norm_q.lora_A.weight": torch.zeros(RANK, 8)},
                 RANK, RANK, family="flux2-klein")


def test_a_klein_kohya_file_with_its_own_alpha_folds_to_one_strength(tmp_path):
    """A file users bring (kohya names, alpha != rank): folded, it applies what its kohya loader applies."""
    transformer = build_tiny_klein(False).transformer
    source = make_lora(transformer, tmp_path / "klein.safetensors", target_modules(transformer, True), rank=RANK)
    kohya = to_kohya(folded(source), RANK, RANK, family="flux2-klein")
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = kohya[key] / 2  # the author meant half of what the weights say
    brought = tmp_path / "brought.safetensors"
    save_file(kohya, str(brought))
    scale = fold_lora(brought, tmp_path / "folded.safetensors", family="flux2-klein")
    assert scale.source == "alpha tensors" and scale.low == scale.high == pytest.approx(0.5) and scale.folded
    as_kohya, as_folded = build_tiny_klein(False).transformer, build_tiny_klein(False).transformer
    Flux2KleinPipeline.load_lora_into_transformer(Flux2KleinPipeline.lora_state_dict(str(brought)), as_kohya)
    state, metadata = Flux2KleinPipeline.lora_state_dict(str(tmp_path / "folded.safetensors"),
                                                         return_lora_metadata=True)
    config = LoraConfig(**{k.removeprefix("transformer."): v for k, v in metadata.items()})
    assert config.lora_alpha == config.r and not config.alpha_pattern  # alpha = rank recorded
    Flux2KleinPipeline.load_lora_into_transformer(state, as_folded, metadata=metadata)
    torch.testing.assert_close(probe_klein(as_folded), probe_klein(as_kohya), atol=1e-5, rtol=1e-4)
    assert set(load_file(str(tmp_path / "folded.safetensors"))) == {f"transformer.{k}" for k in folded(source)}


def test_the_model_card_names_the_klein_base_and_its_licence():
    from lora_studio.training.model_card import model_card

    card = model_card({"trigger": "ohwx", "base_model": "black-forest-labs/FLUX.2-klein-base-4B", "rank": 16})
    assert card.startswith("# ohwx - FLUX.2 [klein] LoRA")
    assert "Flux2KleinPipeline.from_pretrained(\"black-forest-labs/FLUX.2-klein-base-4B\"" in card
    assert "num_inference_steps=50, guidance_scale=4)" in card  # the base flavour's defaults
    assert "Apache-2.0 (commercial use allowed)" in card
    nine = model_card({"trigger": "ohwx", "base_model": "black-forest-labs/FLUX.2-klein-9B"})
    assert "num_inference_steps=4, guidance_scale=1)" in nine and "non-commercial use only" in nine
    flux1 = model_card({"trigger": "ohwx"})
    assert flux1.startswith("# ohwx - FLUX.1 LoRA") and "FluxPipeline.from_pretrained" in flux1
    assert "num_inference_steps=28, guidance_scale=3.5)" in flux1
