"""FLUX.2 [klein] through the model manager and the local engine: one pipeline, the distilled checkpoint
drawing pictures and the sheet (a reference edit, no second model), the base swapped in to train.

The bug class is the right code running the wrong weights, so the two tiny Klein flavours carry
different transformer weights and each test asks which one actually ran.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, LoraWeight
from lora_studio.engines.builtin.klein import tiny_klein_components
from lora_studio.engines.family import KLEIN
from lora_studio.engines.local.engine import LocalEngine, make_local_engine
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.engines.speed.settings import SpeedSettings
from tests.conftest import noise_image
from tests.lora_factory import make_lora, make_tiny_lora
from tests.which_weights import checksum as base_checksum, checksums_that_ran

SIDE = 64
REFERENCE = noise_image(5, size=SIDE)
KLEIN_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.to_qkv_mlp_proj"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def checksum(module: torch.nn.Module) -> float:
    return base_checksum(module, with_lora=False)


@pytest.fixture(scope="module")
def sums():
    return {flavour: checksum(tiny_klein_components(flavour == "distilled")["transformer"])
            for flavour in ("distilled", "base")}


def ran(action) -> list[float]:
    """The weight checksums of the Klein transformers that ran inside `action`, in order."""
    from diffusers import Flux2Transformer2DModel

    return checksums_that_ran(action, Flux2Transformer2DModel, with_lora=False)


def only(seen: list[float]) -> float:
    """The one transformer that ran (every call the same weights)."""
    assert seen and max(seen) - min(seen) < 1e-6, seen
    return seen[0]


def picture(engine, *loras, seed=3, checkpoint=""):
    return np.asarray(engine.generate(GenerateRequest(prompt="photo of mila", seed=seed, width=SIDE, height=SIDE,
                                                      steps=2, loras=tuple(loras), checkpoint=checkpoint)),
                      dtype=np.int16)


def edit(engine, seed=3, prompt="smile"):
    return np.asarray(engine.edit(EditRequest(image=REFERENCE, prompt=prompt, seed=seed, width=SIDE, height=SIDE,
                                              steps=2)), dtype=np.int16)


@pytest.fixture
def engine():
    return make_local_engine("klein-tiny", None, "cpu", "auto")


def test_pictures_and_the_sheet_run_the_distilled_weights_and_training_the_base(engine, sums):
    manager = engine.manager
    assert engine.family is KLEIN and engine.makes_noise and engine.checkpoints() == ("distilled", "base")
    assert engine.defaults().steps == 4 and engine.defaults("base").steps == 50
    assert only(ran(lambda: picture(engine))) == pytest.approx(sums["distilled"])
    assert only(ran(lambda: edit(engine))) == pytest.approx(sums["distilled"])  # the same pipeline edits
    assert manager.sheet() is manager.text_to_image()  # no second pipeline, no Kontext
    shared = {name: getattr(manager.text_to_image(), name) for name in ("vae", "text_encoder", "tokenizer")}
    with manager.for_training() as pipe:
        assert manager.running() == "base" and checksum(pipe.transformer) == pytest.approx(sums["base"])
        assert all(getattr(pipe, name) is module for name, module in shared.items())  # encoders shared
        assert pipe.transformer.config._name_or_path == "klein-tiny-base"  # what a trained LoRA records
    assert only(ran(lambda: picture(engine))) == pytest.approx(sums["distilled"])
    assert manager.load_count == 1 and manager.transformers.loads == {"distilled": 1, "base": 1}


def test_the_base_checkpoint_runs_its_classifier_free_guidance(engine, sums):
    """The pipeline's is_distilled follows the transformer swapped in: the base's picture takes two passes a
    step (CFG at its guidance 4), the distilled one's one."""
    distilled = ran(lambda: engine.generate(GenerateRequest(prompt="x", width=SIDE, height=SIDE, steps=2,
                                                            guidance=4.0)))
    base = ran(lambda: engine.generate(GenerateRequest(prompt="x", width=SIDE, height=SIDE, steps=2, guidance=4.0,
                                                       checkpoint="base")))
    assert len(distilled) == 2 and len(base) == 4
    assert only(base) == pytest.approx(sums["base"])
    assert not np.array_equal(picture(engine), picture(engine, checkpoint="base"))


def test_batched_edits_give_the_images_one_by_one_edits_give(sums):
    one = make_local_engine("klein-tiny", None, "cpu", "auto")
    two = LocalEngine(ModelManager("klein-tiny", device="cpu", speed=SpeedSettings(batch_edits=2)), tiny=True)
    requests = [EditRequest(image=REFERENCE, prompt=p, seed=s, width=SIDE, height=SIDE, steps=2)
                for p, s in (("smile", 1), ("side view", 2), ("laughing", 3))]
    calls = ran(lambda: two.edit_many(requests))
    batched = [np.asarray(i, dtype=np.int16) for i in two.edit_many(requests)]
    alone = [np.asarray(i, dtype=np.int16) for i in one.edit_many(requests)]
    assert len(calls) == 2 * 2  # two calls (2 + 1 edits), two steps each
    for a, b in zip(batched, alone):
        assert np.abs(a - b).max() <= 1


def test_loras_stay_on_the_distilled_transformer_and_the_sheet_runs_none(engine, tmp_path):
    transformer = tiny_klein_components(True)["transformer"]
    lora = LoraWeight("mila", 1.0, make_lora(transformer, tmp_path / "mila.safetensors", KLEIN_TARGETS, seed=4))
    plain = make_local_engine("klein-tiny", None, "cpu", "auto")
    with_lora = picture(engine, lora)
    assert not np.array_equal(with_lora, picture(plain))
    assert np.array_equal(edit(engine), edit(plain))  # the sheet ran without the LoRA
    assert np.array_equal(picture(engine, lora), with_lora)  # and it is still there for the next picture
    assert not np.array_equal(picture(engine, lora, checkpoint="base"), picture(plain, checkpoint="base"))
    assert engine.manager.adapter_names() == ["lora_mila"] == engine.manager.adapter_names("base")


def test_a_lora_of_the_other_family_is_refused_in_words_naming_both(engine, tmp_path):
    flux1 = make_tiny_lora(tmp_path / "flux1.safetensors", seed=1)
    with pytest.raises(EngineError, match=r"FLUX\.1 LoRA, and the model here is FLUX\.2 \[klein\]"):
        engine.check_lora(flux1)
    with pytest.raises(EngineError, match=r"FLUX\.1 LoRA.*FLUX\.2 \[klein\]"):
        picture(engine, LoraWeight("f", 1.0, flux1))
    klein = make_lora(tiny_klein_components(True)["transformer"], tmp_path / "klein.safetensors", KLEIN_TARGETS)
    assert engine.check_lora(klein)["family"] == "flux2-klein"
    tiny_flux = make_local_engine(None, None, "cpu", "auto")
    with pytest.raises(EngineError, match=r"FLUX\.2 \[klein\] LoRA, and the model here is FLUX\.1"):
        tiny_flux.check_lora(klein)


def test_folders_pair_by_their_index_and_the_base_brings_only_its_transformer(tmp_path, sums):
    from lora_studio.engines.builtin.klein import build_tiny_klein

    distilled, base = tmp_path / "named-base", tmp_path / "named-distilled"  # names that lie on purpose
    build_tiny_klein(True).save_pretrained(distilled)
    build_tiny_klein(False).save_pretrained(base)
    engine = LocalEngine(ModelManager(model=str(distilled), kontext_model=str(base), device="cpu"))
    assert "LoRAs train on the base checkpoint" in engine.describe()
    assert only(ran(lambda: picture(engine))) == pytest.approx(sums["distilled"])
    with engine.manager.for_training() as pipe:
        assert checksum(pipe.transformer) == pytest.approx(sums["base"])
    assert engine.manager.load_count == 1 and engine.manager.transformers.loads == {"distilled": 1, "base": 1}
    alone = LocalEngine(ModelManager(model=str(distilled), device="cpu"))  # no base here: it trains on distilled
    with alone.manager.for_training() as pipe:
        assert checksum(pipe.transformer) == pytest.approx(sums["distilled"])
    assert "LoRAs train better on the base" in alone.manager.training_note()
    with pytest.raises(EngineError, match="No FLUX.2 \\[klein\\] base checkpoint"):
        picture(alone, checkpoint="base")
    base_only = LocalEngine(ModelManager(model=str(base), device="cpu"))  # pictures on the base, 50 steps
    assert base_only.defaults().steps == 50 and base_only.checkpoints() == ("base",)
    assert only(ran(lambda: picture(base_only))) == pytest.approx(sums["base"])
    wrong = ModelManager(model=str(distilled), kontext_model=str(distilled), device="cpu")
    assert "not FLUX.2 [klein]'s base flavour" in wrong.choice().note


def test_switching_family_in_settings_switches_the_one_pipeline(tmp_path):
    from lora_studio.config import Settings
    from lora_studio.services.settings.engine_setup import EngineChoice
    from lora_studio.studio import Studio

    with Studio(Settings(workspace=tmp_path / "ws")) as studio:
        assert studio.engine().family.key == "flux1"
        studio.reconfigure(EngineChoice("local", "klein-tiny"))
        assert studio.engine().family is KLEIN and studio.engine().manager.model_id == "klein-tiny"
        assert "FLUX.2 [klein]" in studio.engine_description()
        studio.reconfigure(EngineChoice("tiny"))
        assert studio.engine().family.key == "flux1"
