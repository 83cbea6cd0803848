"""The identity gate of the character sheet, run on the real tiny pipeline with a real face reference.

The tiny engine's images are noise, so with the gate forced on every variation shows no face and is
retried up to the limit: this exercises the retry loop, the reasons and the summary end to end.
"""
import pytest

from lora_studio.services.sheet import SheetOptions


@pytest.mark.slow  # a sheet with face scoring and retries
def test_gate_retries_faceless_variations_and_says_why(studio, astronaut_path):
    character = studio.characters.create("Astronaut")
    studio.characters.add_images(character["id"], [astronaut_path])
    engine = studio.engine()
    engine.makes_noise = False  # pretend the model draws faces, so the gate runs
    done = studio.wait(studio.sheet.start(character["id"], SheetOptions(max_tries=2, slots=(0, 1, 2))).id, 300)
    assert done.outputs["gate"] is True
    assert done.outputs["retried"] == {"no face": 3}
    assert any("no face; trying again" in line for line in done.logs)
    rows = studio.store.find("images", kind="sheet")
    assert len(rows) == 3 and all(r["tries"] == 2 for r in rows)
    assert all(r["score"]["face_found"] is False for r in rows)


def test_gate_off_on_tiny_says_so(studio, astronaut_path):
    character = studio.characters.create("Astronaut")
    studio.characters.add_images(character["id"], [astronaut_path])
    done = studio.wait(studio.sheet.start(character["id"], SheetOptions(slots=(0,))).id, 300)
    assert done.outputs["gate"] is False
    assert any("gate is off" in line for line in done.logs)
