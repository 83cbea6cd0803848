"""Model families as data (engines/family): recognised from model_index.json, the flavour's defaults,
LoRA targets per family, the training shift, and the checkpoints' licences; all without torch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_studio.engines.family import (CHECKPOINTS, FLUX1, KLEIN, KLEIN_4B, KLEIN_9B, KLEIN_BASE_4B, KLEIN_BASE_9B,
                                        checkpoint, family_named, flavour_for, flavour_of)
from tests.conftest import ROOT


def index_folder(tmp_path, name: str, **index) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    return str(folder)


def test_the_package_loads_no_torch():
    code = "import sys, lora_studio.engines.family; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_flavours_come_from_the_index_not_the_folder_name(tmp_path):
    distilled = flavour_for(index_folder(tmp_path, "flux1-dev", _class_name="Flux2KleinPipeline", is_distilled=True))
    base = flavour_for(index_folder(tmp_path, "klein-4b", _class_name="Flux2KleinPipeline", is_distilled=False))
    dev = flavour_for(index_folder(tmp_path, "klein", _class_name="FluxPipeline"))
    kontext = flavour_for(index_folder(tmp_path, "k", _class_name="FluxKontextPipeline"))
    assert (distilled.family, distilled.distilled, distilled.editor) == (KLEIN, True, False)
    assert (base.family, base.distilled) == (KLEIN, False)
    assert (dev.family, dev.distilled, dev.editor) == (FLUX1, False, False)
    assert kontext.family is FLUX1 and kontext.editor
    assert flavour_of({"_class_name": "Flux2KleinPipeline"}).distilled is False  # no flag: undistilled
    assert flavour_of({"_class_name": "StableDiffusionXLPipeline"}) is None
    assert flavour_of(None) is None and flavour_for(str(tmp_path / "missing")) is None
    assert [f.describe() for f in (distilled, base, dev, kontext)] == [
        "FLUX.2 [klein] distilled", "FLUX.2 [klein] base", "FLUX.1", "FLUX.1 Kontext (image editor)"]


def test_defaults_per_flavour():
    assert (KLEIN.defaults(True).steps, KLEIN.defaults(True).guidance) == (4, 1.0)  # no CFG
    assert (KLEIN.defaults(False).steps, KLEIN.defaults(False).guidance) == (50, 4.0)
    assert (FLUX1.defaults(False).steps, FLUX1.defaults(False).guidance, FLUX1.defaults(False).sheet_guidance) == (
        28, 3.5, 2.5)
    assert KLEIN.sheet == "reference-edit" and FLUX1.sheet == "kontext-transformer"
    assert KLEIN.text.hidden_layers == (9, 18, 27) and not KLEIN.text.pooled and not KLEIN.guidance_embeds
    assert family_named("flux2-klein") is KLEIN
    with pytest.raises(KeyError):
        family_named("sdxl")


def test_the_training_shift_follows_the_image_tokens():
    assert FLUX1.training_sigma(0.5, 4096) == 0.5  # FLUX.1: the scheduler's table, unshifted
    at_256, at_1024, at_4096 = (KLEIN.training_sigma(0.5, n) for n in (256, 1024, 4096))
    assert at_256 == pytest.approx(2.7183 ** 0.5 / (1 + 2.7183 ** 0.5), abs=1e-3)  # shift e^0.5
    assert 0.5 < at_256 < at_1024 < at_4096 < 1  # bigger images train noisier
    assert KLEIN.training_sigma(0.0, 4096) == 0.0 and KLEIN.training_sigma(1.0, 4096) == pytest.approx(1.0)


def test_checkpoints_say_licence_and_access():
    open_4b = [checkpoint(KLEIN_4B), checkpoint(KLEIN_BASE_4B)]
    gated_9b = [checkpoint(KLEIN_9B), checkpoint(KLEIN_BASE_9B)]
    assert all(c.licence == "Apache-2.0" and not c.gated and c.commercial for c in open_4b)
    assert all(c.licence == "FLUX Non-Commercial License" and c.gated and not c.commercial for c in gated_9b)
    assert [c.distilled for c in open_4b + gated_9b] == [True, False, True, False]
    assert checkpoint(KLEIN_4B).sibling == KLEIN_BASE_4B and checkpoint(KLEIN_BASE_9B).sibling == KLEIN_9B
    assert {c.architecture for c in open_4b} == {"klein-4b"} and {c.architecture for c in gated_9b} == {"klein-9b"}
    assert checkpoint("black-forest-labs/flux.2-klein-4b") is checkpoint(KLEIN_4B)  # hub ids ignore case
    assert checkpoint("someone/FLUX.2-klein-4B-fp8") is None
    assert "no token needed" in checkpoint(KLEIN_4B).licence_text()
    assert "non-commercial" in checkpoint(KLEIN_9B).licence_text() and "token" in checkpoint(KLEIN_9B).licence_text()
    assert all(c.architecture in family_named(c.family).architectures for c in CHECKPOINTS)
