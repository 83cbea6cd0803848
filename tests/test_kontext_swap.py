"""FLUX.1-Kontext-dev runs its own transformer under FLUX.1-dev's encoders and VAE.

The bug class is the right code running the wrong weights, so the dev and Kontext folders here hold
transformers with different random weights, and each test asks which one actually ran.
"""
from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch

from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, LoraWeight
from lora_studio.engines.local.engine import LocalEngine
from lora_studio.engines.local.model_manager import ModelManager
from tests.conftest import noise_image
from tests.which_weights import checksum, checksums_that_ran
from tests.lora_factory import make_tiny_lora

Folders = namedtuple("Folders", "dev kontext")
REFERENCE = noise_image(5, size=32)


def save_kontext(transformer, folder) -> None:
    """A Kontext repo as the hub holds it for us: model_index.json naming FluxKontextPipeline, and the
    transformer (its encoders are FLUX.1-dev's, never read)."""
    transformer.save_pretrained(folder / "transformer")
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "FluxKontextPipeline", "_diffusers_version": "0.42.1",
         "transformer": ["diffusers", "FluxTransformer2DModel"]}))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    root = tmp_path_factory.mktemp("models")
    # Names that lie on purpose: Kontext is recognised by model_index.json, never by name.
    dev, kontext = root / "kontext-looking-name", root / "plain-name"
    build_tiny_flux(seed=1).save_pretrained(dev)
    save_kontext(build_tiny_flux(seed=2).transformer, kontext)
    return Folders(str(dev), str(kontext))




def ran(action) -> float:
    """The weight checksum of the Flux transformer that actually ran inside `action` (whichever it was)."""
    from diffusers import FluxTransformer2DModel

    seen = checksums_that_ran(action, FluxTransformer2DModel)
    assert seen and len(set(seen)) == 1, "one transformer per job"
    return seen[0]


def edit(engine, seed=3):
    return np.asarray(engine.edit(EditRequest(image=REFERENCE, prompt="smile", seed=seed, width=32, height=32,
                                              steps=2)), dtype=np.int16)


def text(engine, *loras, seed=3):
    return np.asarray(engine.generate(GenerateRequest(prompt="photo of mila", seed=seed, width=32, height=32,
                                                      steps=2, loras=tuple(loras))), dtype=np.int16)


def test_the_sheet_runs_kontext_and_text_runs_dev_over_the_same_encoders(folders):
    from diffusers import FluxTransformer2DModel

    manager = ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu")
    engine = LocalEngine(manager)
    dev_sum = checksum(FluxTransformer2DModel.from_pretrained(folders.dev, subfolder="transformer"))
    kontext_sum = checksum(FluxTransformer2DModel.from_pretrained(folders.kontext, subfolder="transformer"))
    assert dev_sum != kontext_sum
    assert ran(lambda: text(engine)) == pytest.approx(dev_sum)
    shared = {name: getattr(manager.text_to_image(), name) for name in ("vae", "text_encoder", "text_encoder_2")}
    assert ran(lambda: edit(engine)) == pytest.approx(kontext_sum)
    kontext_pipe = manager.kontext()
    assert all(getattr(kontext_pipe, name) is module for name, module in shared.items())
    assert manager.running() == "kontext"
    assert ran(lambda: text(engine)) == pytest.approx(dev_sum)
    edit(engine)
    # Two swaps each way: the encoders and VAE were read once, each transformer once (kept in memory).
    assert manager.load_count == 1 and manager.transformers.loads == {"dev": 1, "kontext": 1}
    assert all(getattr(manager.text_to_image(), name) is module for name, module in shared.items())


@pytest.mark.slow  # a sheet on two models
def test_sheet_images_are_the_kontext_models_own(folders, tmp_path):
    """The same image as Kontext's own weights give, and not the one FLUX.1-dev's transformer would draw."""
    from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

    engine = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    dev = FluxPipeline.from_pretrained(folders.dev)
    kontext_weights = FluxTransformer2DModel.from_pretrained(folders.kontext, subfolder="transformer")
    direct = FluxKontextPipeline(**dict(dev.components, transformer=kontext_weights))
    as_kontext = LocalEngine(ModelManager(model="direct", loader=lambda *_: direct, device="cpu"))
    as_dev = LocalEngine(ModelManager(model="dev-only", loader=lambda *_: FluxPipeline.from_pretrained(folders.dev),
                                      device="cpu"))
    sheet = edit(engine)
    assert np.array_equal(sheet, edit(as_kontext))
    assert not np.array_equal(sheet, edit(as_dev))
    assert np.array_equal(text(engine), text(as_dev))


def test_a_sheet_on_a_dev_model_without_kontext_is_refused_in_words(folders):
    engine = LocalEngine(ModelManager(model=folders.dev, device="cpu"))
    with pytest.raises(EngineError, match="FLUX.1-Kontext-dev in Settings → Models"):
        edit(engine)
    assert text(engine).shape == (32, 32, 3)  # text-to-image still works
    wrong = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.dev + "/", device="cpu"))
    with pytest.raises(EngineError, match="not a Kontext model"):
        edit(wrong)


def test_a_kontext_model_alone_draws_the_sheet_and_refuses_text(folders, tmp_path):
    from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

    whole = tmp_path / "kontext-whole"  # a whole Kontext repo given as the one model
    kontext_weights = FluxTransformer2DModel.from_pretrained(folders.kontext, subfolder="transformer")
    dev = FluxPipeline.from_pretrained(folders.dev)
    FluxKontextPipeline(**dict(dev.components, transformer=kontext_weights)).save_pretrained(whole)
    engine = LocalEngine(ModelManager(model=str(whole), device="cpu"))
    with pytest.raises(EngineError, match="training need FLUX.1-dev"):
        text(engine)
    both = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    assert np.array_equal(edit(engine), edit(both))


def test_loras_stay_on_the_dev_transformer_across_a_sheet(folders, tmp_path):
    lora = LoraWeight("mila", 1.0, make_tiny_lora(tmp_path / "mila.safetensors", seed=4))
    engine = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    plain = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    with_lora = text(engine, lora)
    assert np.array_equal(edit(engine), edit(plain))  # Kontext ran without the LoRA
    assert np.array_equal(text(engine, lora), with_lora)  # back on dev: the adapter is still there
    assert not np.array_equal(text(engine), with_lora)


def test_without_room_in_host_memory_the_idle_transformer_is_read_again(folders, monkeypatch, tmp_path):
    import psutil

    lora = LoraWeight("mila", 0.8, make_tiny_lora(tmp_path / "mila.safetensors", seed=5))
    engine = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    first, with_lora = edit(engine), text(engine, lora)
    Memory = namedtuple("Memory", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(0, 0))
    edit(engine)  # dev's transformer (with its LoRA) is dropped
    assert "dev" not in engine.manager.transformers.modules
    assert "read again from disk" in engine.manager.transformers.note
    assert np.array_equal(text(engine, lora), with_lora)  # read again, and the LoRA loaded again onto it
    assert np.array_equal(edit(engine), first)
    assert engine.manager.transformers.loads == {"dev": 2, "kontext": 2}


@pytest.mark.wide
def test_wide_sheet_runs_kontext_and_text_runs_dev(wide_pipe, tmp_path):
    from diffusers import FluxTransformer2DModel

    from lora_studio.engines.builtin.wide import transformer_config

    wide_pipe.save_pretrained(tmp_path / "dev")
    torch.manual_seed(11)
    save_kontext(FluxTransformer2DModel(**transformer_config()).eval(), tmp_path / "kontext")
    manager = ModelManager(model=str(tmp_path / "dev"), kontext_model=str(tmp_path / "kontext"), device="cpu")
    engine = LocalEngine(manager, max_sequence_length=16)
    request = GenerateRequest(prompt="photo", seed=1, width=32, height=32, steps=1)
    dev_sum = ran(lambda: engine.generate(request))
    t5 = manager.text_to_image().text_encoder_2
    sheet = EditRequest(image=REFERENCE, prompt="smile", seed=1, width=32, height=32, steps=1)
    kontext_sum = ran(lambda: engine.edit(sheet))
    assert kontext_sum != pytest.approx(dev_sum)
    assert manager.kontext().text_encoder_2 is t5 and manager.kontext().vae is manager.text_to_image().vae
    assert ran(lambda: engine.generate(request)) == pytest.approx(dev_sum)
    assert manager.load_count == 1 and manager.transformers.loads == {"dev": 1, "kontext": 1}


def test_the_speed_settings_reach_the_swapped_in_transformer(folders):
    """Fused QKV (and with it compile, fp8, offloading: the same path) is applied to Kontext's transformer
    when it loads, and the sheet draws the image the plain engine draws."""
    from lora_studio.engines.speed.settings import SpeedSettings

    fast = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu",
                                    speed=SpeedSettings(fuse_qkv=True)))
    plain = LocalEngine(ModelManager(model=folders.dev, kontext_model=folders.kontext, device="cpu"))
    assert np.abs(edit(fast) - edit(plain)).max() <= 1
    transformer = fast.manager.kontext().transformer
    assert fast.manager.running() == "kontext" and hasattr(transformer.transformer_blocks[0].attn, "to_qkv")
