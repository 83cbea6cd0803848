"""Every speed setting that runs on a CPU gives the default image, so a fast path can never silently change
results (tiny Flux, 64², 4 steps).

Tolerance: at most TOLERANCE levels of 255 per pixel (we measure 0 on this machine: fused QKV, the
hot-swap slot, compile, group offloading and batching reproduce the default bit for bit here; 1 level
leaves room for another CPU's BLAS). The first-block cache skips work by design: at threshold 0.05 it
stays within CACHE_TOLERANCE, and a large threshold visibly changes the image, so the test is not vacuous.
CUDA-only settings (fp8, 8-bit) are refused or skipped in words.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_studio.config import Settings, SpeedRequest
from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, LoraWeight
from lora_studio.engines.local.engine import LocalEngine
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.engines.speed.settings import GpuInfo, SpeedSettings, resolve_speed
from lora_studio.progress import NullReporter
from lora_studio.services.sheet import SheetOptions
from tests.conftest import noise_image
from tests.lora_factory import make_kohya_lora, make_tiny_lora

TOLERANCE = 1
CACHE_TOLERANCE = 2
COMPILE = SpeedSettings(compile=True, compile_backend="aot_eager", fuse_qkv=True, hotswap_rank=32)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speed_loras")
    return {
        "a": make_tiny_lora(folder / "a.safetensors", seed=1),
        "b": make_tiny_lora(folder / "b.safetensors", seed=2, rank=8),  # another rank: still one slot
        "kohya": make_kohya_lora(folder / "k.safetensors", seed=3),  # one A shared by q, k and v
    }


def cases(loras):
    """No LoRA, single LoRAs of each kind and strength, two at once, and back to none."""
    a, b, k = (lambda w, key=key: LoraWeight(key, w, loras[key]) for key in ("a", "b", "kohya"))
    return [(), (a(0.8),), (b(1.0),), (a(1.2),), (k(1.0),), (a(0.5), b(0.7)), ()]


def gen(engine, loras=(), seed=3):
    request = GenerateRequest(prompt="photo of mila", seed=seed, width=64, height=64, steps=4, loras=tuple(loras))
    return np.asarray(engine.generate(request), dtype=np.int16)


def max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def reference(loras):
    plain = LocalEngine(ModelManager(), tiny=True)
    return [gen(plain, c) for c in cases(loras)]


def engine_with(**kwargs) -> LocalEngine:
    return LocalEngine(ModelManager(**kwargs), tiny=True)


@pytest.mark.parametrize("kwargs", [
    dict(speed=SpeedSettings(fuse_qkv=True)),
    dict(hotswap=True, hotswap_rank=16),
    dict(hotswap=True, hotswap_rank=32, speed=SpeedSettings(fuse_qkv=True)),
    dict(speed=SpeedSettings(group_offload="all")),
], ids=["fused-qkv", "hot-swap-slot", "fused-qkv+hot-swap", "group-offload"])
def test_speed_setting_gives_the_default_image(kwargs, loras, reference):
    engine = engine_with(**kwargs)
    for loras_in, expected in zip(cases(loras), reference):
        assert max_diff(gen(engine, loras_in), expected) <= TOLERANCE, loras_in
    assert engine.manager.load_count == 1


def test_fused_qkv_moves_loras_onto_the_fused_layers(loras):
    """Without the rewrite a LoRA on to_q/to_k/to_v would be silently ignored by the fused attention."""
    from lora_studio.engines.lora.hotswap import canonical_lora

    engine = engine_with(speed=SpeedSettings(fuse_qkv=True))
    pipe = engine.manager.text_to_image()
    assert engine.manager.fused and hasattr(pipe.transformer.transformer_blocks[0].attn, "to_qkv")
    ours = canonical_lora(pipe, loras["a"], fused=True)
    assert not any(".to_q." in k or ".to_k." in k or ".to_v." in k for k in ours)
    a_fused = ours["transformer.transformer_blocks.0.attn.to_qkv.lora_A.weight"]
    assert a_fused.shape[0] == 3 * 4  # three rank-4 A's stacked
    kohya = canonical_lora(pipe, loras["kohya"], fused=True)
    assert kohya["transformer.transformer_blocks.0.attn.to_qkv.lora_A.weight"].shape[0] == 4  # shared A kept


def test_compiled_hot_swap_never_recompiles(loras, reference):
    """Regional compile (aot_eager here: the graph capture inductor uses, without the C++ build): switching
    LoRAs, strengths, and back to none reuse the first compiled graphs."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    engine = engine_with(speed=COMPILE)
    assert max_diff(gen(engine), reference[0]) <= TOLERANCE  # compiles here, with the empty slot in place
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    single = [c for c in cases(loras) if len(c) <= 1]
    expected = [r for c, r in zip(cases(loras), reference) if len(c) <= 1]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for loras_in, want in zip(single, expected):
            assert max_diff(gen(engine, loras_in), want) <= TOLERANCE, loras_in
    assert counters["stats"]["unique_graphs"] == graphs
    assert engine.manager.adapter_names() == []  # every switch went through the one slot
    assert engine.manager.hot_lora() == loras["kohya"]


def test_first_block_cache_stays_close_and_really_skips(reference):
    engine = engine_with(speed=SpeedSettings(first_block_cache=0.05))
    assert max_diff(gen(engine), reference[0]) <= CACHE_TOLERANCE
    eager = engine_with(speed=SpeedSettings(first_block_cache=0.95))
    tail = eager.manager.text_to_image().transformer.single_transformer_blocks[0].proj_mlp  # inside the block
    calls = []
    tail.register_forward_hook(lambda *_: calls.append(1))
    gen(eager)
    assert 1 <= len(calls) < 4  # 4 steps; the blocks after the first ran only when it changed enough


def test_batched_kontext_edits_equal_one_by_one():
    reference = noise_image(2, size=64)
    requests = [EditRequest(image=reference, prompt=p, seed=1000 + i, width=64, height=64, steps=2)
                for i, p in enumerate(["smile", "turn left", "at the beach", "in a café"])]
    one_by_one = engine_with()
    batched = engine_with(speed=SpeedSettings(batch_edits=3))
    assert batched.edit_batch == 3
    singles = [one_by_one.edit(r) for r in requests]
    together = batched.edit_many(requests)  # one call of 3, one of 1
    assert all(max_diff(a, b) <= TOLERANCE for a, b in zip(singles, together))


def test_sheet_in_batches_keeps_seeds_and_images(tmp_path, image_file):
    from lora_studio.studio import Studio

    def sheet(folder, batch):
        settings = Settings.from_env({}, workspace=folder, batch_edits=batch)
        with Studio(settings) as studio:
            assert studio.engine().edit_batch == batch
            character = studio.characters.create("Noise")
            studio.characters.add_images(character["id"], [image_file])
            studio.wait(studio.sheet.start(character["id"], SheetOptions(slots=tuple(range(7)))).id, 600)
            rows = studio.store.find("images", kind="sheet")
            return {r["slot"]: (r["seed"], _open(studio.characters.abs(r["path"]))) for r in rows}

    one, three = sheet(tmp_path / "one", 1), sheet(tmp_path / "three", 3)
    assert sorted(one) == sorted(three) == list(range(7))  # groups of 3, 3 and 1
    for slot in one:
        assert one[slot][0] == three[slot][0] == 1000 + slot
        assert max_diff(one[slot][1], three[slot][1]) <= TOLERANCE


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_cuda_only_settings_are_refused_or_skipped_in_words():
    cpu = GpuInfo(kind="cpu")
    with pytest.raises(EngineError, match="fp8 base needs an NVIDIA GPU of compute 8.9"):
        ModelManager(speed=SpeedSettings(quantize="fp8"))
    with pytest.raises(EngineError, match="8-bit base needs an NVIDIA GPU"):
        ModelManager(speed=SpeedSettings(quantize="8bit"))
    skipped = resolve_speed(SpeedRequest(quantize="fp8", compile=True), cpu)
    assert skipped.quantize is None and skipped.compile  # compile runs on a CPU; fp8 does not
    assert "Skipped quantize: the fp8 base needs an NVIDIA GPU" in skipped.reason
    assert "Set by you: compile on, quantize fp8." in skipped.reason
    mps = resolve_speed(SpeedRequest(compile=True), GpuInfo(kind="mps"))
    assert not mps.compile and "not supported for this model on Apple GPUs" in mps.reason


def test_training_reloads_the_base_plain_and_generation_gets_its_speed_back(tmp_path, loras, reference):
    from lora_studio.training.trainer import train_on_manager
    from tests.test_training import request

    manager = ModelManager(speed=SpeedSettings(fuse_qkv=True), hotswap=True, hotswap_rank=32)
    engine = LocalEngine(manager, tiny=True)
    assert max_diff(gen(engine, cases(loras)[1]), reference[1]) <= TOLERANCE
    seen = {}

    def spy(pipe, req, reporter, **kwargs):
        transformer = pipe.transformer
        seen["fused"] = any(getattr(m, "fused_projections", False) for m in transformer.modules())
        seen["adapters"] = dict(getattr(transformer, "peft_config", {}) or {})
        return real(pipe, req, reporter, **kwargs)

    import lora_studio.training.trainer as trainer

    real, trainer.train_lora = trainer.train_lora, spy
    try:
        result = train_on_manager(manager, request(tmp_path, steps=2), NullReporter())
    finally:
        trainer.train_lora = real
    assert seen == {"fused": False, "adapters": {}}  # trained on the plain base
    assert result.lora_path.is_file()
    assert manager.load_count == 2 and not manager.loaded()  # reloaded with speed on the next image
    assert max_diff(gen(engine, cases(loras)[1]), reference[1]) <= TOLERANCE
    assert manager.fused and manager.load_count == 3
