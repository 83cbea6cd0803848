"""The tiny FLUX.2 [klein] (engines/builtin/klein.py): diffusers' own Flux2KleinPipeline runs text-to-image
and reference edits on it on the CPU, base and distilled are told apart by their pictures, it survives
save_pretrained/from_pretrained, and a diffusers-format LoRA loads on it with the update it says."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import Flux2KleinPipeline
from PIL import Image

from lora_studio.engines.builtin.klein import build_tiny_klein, qwen_tokenizer
from lora_studio.engines.family import KLEIN, flavour_for
from lora_studio.engines.lora.targets import target_modules
from tests.klein_kit import merged_copy, probe_klein
from tests.lora_factory import make_lora

SIDE = 64  # the smallest reference Flux2KleinPipeline accepts
STEPS, TOKENS = 2, 64  # the tiny model's pictures are noise: fewer steps and prompt tokens, the same code


@pytest.fixture(scope="module")
def pipes():
    built = {"distilled": build_tiny_klein(True), "base": build_tiny_klein(False)}
    for pipe in built.values():
        pipe.set_progress_bar_config(disable=True)
    return built


def draw(pipe, distilled: bool, **kwargs) -> np.ndarray:
    return pipe(prompt="a portrait of ohwx", height=SIDE, width=SIDE, num_inference_steps=STEPS,
                guidance_scale=KLEIN.defaults(distilled).guidance, max_sequence_length=TOKENS,
                generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images[0]


def reference() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))


def test_the_chat_template_is_what_the_pipeline_asks_for():
    tokenizer = qwen_tokenizer()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "a dog"}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na dog<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens[0] == "<|im_start|>" and "<think>" in tokens and "</think>" in tokens  # special tokens stay whole
    assert tokenizer.pad_token == "<|endoftext|>"


def test_encode_prompt_stacks_three_hidden_states(pipes):
    pipe = pipes["distilled"]
    embeds, text_ids = pipe.encode_prompt("a dog")  # the real defaults: layers (9, 18, 27), 512 tokens
    assert embeds.shape == (1, 512, pipe.transformer.config.joint_attention_dim)
    assert text_ids.shape == (1, 512, 4) and text_ids[0, :, 3].tolist() == list(range(512))
    hidden = pipe.text_encoder.config.hidden_size
    layer9 = pipe.encode_prompt("a dog", text_encoder_out_layers=(9,))[0]
    torch.testing.assert_close(embeds[..., :hidden], layer9)


def test_text_to_image_on_both_flavours_and_which_one_ran(pipes):
    distilled, base = draw(pipes["distilled"], True), draw(pipes["base"], False)
    assert distilled.shape == base.shape == (SIDE, SIDE, 3)
    assert np.abs(distilled - base).max() > 0.05  # different transformer weights, different pictures
    again = draw(build_tiny_klein(True), True)
    np.testing.assert_array_equal(again, distilled)  # a fresh build is the same model
    assert pipes["distilled"].config.is_distilled and not pipes["base"].config.is_distilled


def test_base_runs_classifier_free_guidance_and_distilled_does_not(pipes):
    calls = {}
    for name, pipe in pipes.items():
        seen = []
        hook = pipe.transformer.register_forward_hook(lambda *_: seen.append(1))
        try:
            pipe(prompt="a dog", height=SIDE, width=SIDE, num_inference_steps=STEPS, guidance_scale=4.0,
                 max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(0))
        finally:
            hook.remove()
        calls[name] = len(seen)
    assert calls == {"distilled": STEPS, "base": 2 * STEPS}  # the base adds an unconditional pass per step


@pytest.mark.parametrize("flavour", ["distilled", "base"])
def test_a_reference_edit_sends_the_reference_tokens(pipes, flavour):
    pipe = pipes[flavour]
    lengths = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        plain = draw(pipe, flavour == "distilled")
        edited = draw(pipe, flavour == "distilled", image=reference())
    finally:
        hook.remove()
    tokens = (SIDE // (pipe.vae_scale_factor * 2)) ** 2
    passes = 1 if flavour == "distilled" else 2  # the base's CFG runs each step twice
    assert lengths == [tokens] * STEPS * passes + [2 * tokens] * STEPS * passes  # [noisy, reference latents]
    assert edited.shape == plain.shape and np.abs(edited - plain).max() > 0


def test_save_and_load_round_trip(pipes, tmp_path):
    for name, pipe in pipes.items():
        folder = tmp_path / name
        pipe.save_pretrained(folder)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is (name == "distilled")
        flavour = flavour_for(str(folder))
        assert flavour.family is KLEIN and flavour.distilled is (name == "distilled")
        loaded = Flux2KleinPipeline.from_pretrained(folder, local_files_only=True)
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(draw(loaded, name == "distilled"), draw(pipe, name == "distilled"))


def test_a_diffusers_lora_loads_with_the_update_it_says(tmp_path):
    pipe = build_tiny_klein(False)
    targets = target_modules(pipe.transformer, train_mlp=True)
    assert {t.split(".", 2)[2] for t in targets} == {
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
        "attn.add_v_proj", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in",
        "ff_context.linear_out", "attn.to_qkv_mlp_proj", "attn.to_out"}
    path = make_lora(pipe.transformer, tmp_path / "klein.safetensors", targets, rank=4, alpha=2.0, magnitude=0.3)
    base = probe_klein(pipe.transformer)
    state = Flux2KleinPipeline.lora_state_dict(str(path))
    pipe.load_lora_weights(str(path), adapter_name="mila")
    loaded = probe_klein(pipe.transformer)
    assert (loaded - base).abs().max() > 1e-3
    by_hand = merged_copy(lambda: build_tiny_klein(False).transformer, state, scale=2.0 / 4)
    torch.testing.assert_close(loaded, probe_klein(by_hand), atol=1e-5, rtol=1e-4)
    pipe.set_adapters(["mila"], [0.0])
    torch.testing.assert_close(probe_klein(pipe.transformer), base)  # strength 0 is the base exactly
    before = draw(pipe, False)
    pipe.set_adapters(["mila"], [1.0])
    assert np.abs(draw(pipe, False) - before).max() > 0


@pytest.mark.wide
def test_the_wide_klein_has_4b_widths_and_draws():
    from lora_studio.engines.builtin.klein_wide import KLEIN_4B_TRANSFORMER, build_wide_klein

    pipe = build_wide_klein(True)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    for key in ("in_channels", "num_attention_heads", "attention_head_dim", "joint_attention_dim", "mlp_ratio"):
        assert config[key] == KLEIN_4B_TRANSFORMER[key], key
    assert (config.num_layers, config.num_single_layers) == (1, 1)
    assert 3 * pipe.text_encoder.config.hidden_size == config.joint_attention_dim  # Qwen3-4B's 2560, stacked
    assert pipe.vae.config.latent_channels == 32 and pipe.vae_scale_factor == 8
    image = pipe(prompt="ohwx", image=reference(), height=SIDE, width=SIDE, num_inference_steps=1,
                 max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (SIDE, SIDE, 3) and np.isfinite(image).all()
