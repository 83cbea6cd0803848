import numpy as np
import pytest

from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, LoraWeight
from lora_studio.engines.local.engine import LocalEngine
from lora_studio.engines.local.model_manager import ModelManager
from tests.conftest import noise_image
from tests.lora_factory import make_kohya_lora, make_sdxl_like_lora, make_tiny_lora


@pytest.fixture
def engine():
    return LocalEngine(ModelManager(), tiny=True)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {
        "a": make_tiny_lora(folder / "a.safetensors", seed=1),
        "b": make_tiny_lora(folder / "b.safetensors", seed=2),
        "kohya": make_kohya_lora(folder / "k.safetensors", seed=3),
        "sdxl": make_sdxl_like_lora(folder / "sdxl.safetensors"),
    }


def gen(engine, *loras, seed=3):
    request = GenerateRequest(prompt="photo of mila", seed=seed, width=64, height=64, steps=4, loras=tuple(loras))
    return np.asarray(engine.generate(request), dtype=np.int16)


def test_tiny_generation_is_deterministic(engine):
    first = gen(engine)
    assert np.array_equal(first, gen(engine))
    assert not np.array_equal(first, gen(engine, seed=4))


def test_kontext_shares_the_base_weights(engine):
    base = engine.manager.text_to_image()
    kontext = engine.manager.kontext()
    assert kontext.transformer is base.transformer
    assert kontext.vae is base.vae and kontext.text_encoder_2 is base.text_encoder_2
    image = engine.edit(EditRequest(image=noise_image(size=64), prompt="smile", width=64, height=64, steps=2))
    assert image.size == (64, 64)
    assert engine.manager.load_count == 1


def test_lora_strength_zero_is_base_and_strength_grows(engine, loras):
    base = gen(engine)
    zero = gen(engine, LoraWeight("a", 0.0, loras["a"]))
    assert np.array_equal(base, zero)
    diffs = [np.abs(gen(engine, LoraWeight("a", s, loras["a"])) - base).mean() for s in (0.3, 0.6, 1.2)]
    assert diffs[0] > 0 and diffs[0] < diffs[1] < diffs[2]
    assert np.array_equal(gen(engine), base)  # no LoRA requested: adapters inactive
    assert engine.manager.load_count == 1


def test_two_loras_combine_and_unload(engine, loras):
    a = gen(engine, LoraWeight("a", 1.0, loras["a"]))
    b = gen(engine, LoraWeight("b", 1.0, loras["b"]))
    both = gen(engine, LoraWeight("a", 1.0, loras["a"]), LoraWeight("b", 1.0, loras["b"]))
    assert not np.array_equal(both, a) and not np.array_equal(both, b)
    assert set(engine.manager.adapter_names()) == {"lora_a", "lora_b"}
    engine.manager.drop_lora("a")
    assert engine.manager.adapter_names() == ["lora_b"]


def test_adapter_cache_evicts_least_recently_used(loras):
    sizes = sum(loras[k].stat().st_size for k in ("a", "b", "kohya"))
    engine = LocalEngine(ModelManager(adapter_budget_bytes=sizes - 1), tiny=True)  # one must go
    gen(engine, LoraWeight("a", 1.0, loras["a"]))
    gen(engine, LoraWeight("b", 1.0, loras["b"]))
    gen(engine, LoraWeight("a", 0.5, loras["a"]))  # touch a: b is now the oldest
    gen(engine, LoraWeight("k", 1.0, loras["kohya"]))
    assert "lora_b" not in engine.manager.adapter_names()
    assert "lora_a" in engine.manager.adapter_names()


def test_kohya_file_loads_and_changes_output(engine, loras):
    info = engine.check_lora(loras["kohya"])
    assert info["format"] == "kohya"
    assert not np.array_equal(gen(engine), gen(engine, LoraWeight("k", 1.0, loras["kohya"])))


def test_wrong_architecture_is_refused_in_words(engine, loras, tmp_path):
    with pytest.raises(EngineError, match="Stable Diffusion"):
        engine.check_lora(loras["sdxl"])
    with pytest.raises(EngineError, match="Stable Diffusion"):
        gen(engine, LoraWeight("sdxl", 1.0, loras["sdxl"]))
    wide = make_kohya_lora(tmp_path / "wide.safetensors", inner=3072)
    with pytest.raises(EngineError, match="does not fit|different model"):
        engine.check_lora(wide)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(EngineError, match="not a readable"):
        engine.check_lora(junk)


@pytest.mark.slow  # several LoRA loads, ~10 s
def test_hotswap_switches_loras_in_one_slot_with_the_same_outputs(loras):
    plain = LocalEngine(ModelManager(), tiny=True)
    hot = LocalEngine(ModelManager(hotswap=True, hotswap_rank=8), tiny=True)
    for name in ("a", "b", "a"):
        lora = LoraWeight(name, 0.8, loras[name])
        assert np.array_equal(gen(hot, lora), gen(plain, lora))
        assert hot.manager.hot_lora() == loras[name]
    assert hot.manager.adapter_names() == []  # one slot, no adapter pile-up
    assert hot.manager.load_count == 1
    assert np.array_equal(gen(hot), gen(plain))  # no LoRA asked: slot disabled


def test_comfyui_and_ai_toolkit_namings_load(engine, loras, tmp_path):
    from safetensors.torch import load_file, save_file

    kohya = load_file(str(loras["kohya"]))
    comfy = {k.replace("lora_unet_double_blocks_0_img_attn_qkv", "diffusion_model.double_blocks.0.img_attn.qkv")
              .replace("lora_unet_double_blocks_0_txt_attn_qkv", "diffusion_model.double_blocks.0.txt_attn.qkv"): v
             for k, v in kohya.items()}
    save_file(comfy, str(tmp_path / "comfy.safetensors"))
    assert engine.check_lora(tmp_path / "comfy.safetensors")["format"] == "comfyui"
    kohya_out = gen(engine, LoraWeight("k", 1.0, loras["kohya"]))
    comfy_out = gen(engine, LoraWeight("c", 1.0, tmp_path / "comfy.safetensors"))
    assert np.array_equal(kohya_out, comfy_out)
    # ai-toolkit files use diffusers names and carry no peft metadata
    save_file(load_file(str(loras["a"])), str(tmp_path / "aitk.safetensors"))
    assert engine.check_lora(tmp_path / "aitk.safetensors")["format"] == "diffusers"
    assert not np.array_equal(gen(engine), gen(engine, LoraWeight("t", 1.0, tmp_path / "aitk.safetensors")))


def test_switching_to_kontext_loads_only_its_transformer():
    """The base (encoders, VAE, dev transformer) loads once; Kontext brings only its transformer, once."""
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    loads = []

    def loader(model_id, dtype):
        loads.append(model_id)
        return build_tiny_flux()

    def transformer_loader(model_id, dtype):
        loads.append(f"{model_id}/transformer")
        return build_tiny_flux(seed=2).transformer

    manager = ModelManager(model="flux-dev", kontext_model="flux-kontext", loader=loader,
                           transformer_loader=transformer_loader)
    for _ in range(2):
        assert manager.kontext().transformer is not manager.text_to_image().transformer
    assert loads == ["flux-dev", "flux-kontext/transformer"]
    assert manager.load_count == 1


@pytest.mark.slow  # saves and loads a pipeline
def test_a_model_folder_loads_through_the_real_weights_path(tmp_path):
    """The tiny model saved in diffusers layout loads like FLUX.1-dev would: same code, no tiny shortcuts."""
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    build_tiny_flux().save_pretrained(tmp_path / "flux")
    engine = LocalEngine(ModelManager(model=str(tmp_path / "flux")), tiny=False)
    built_in_memory = LocalEngine(ModelManager(model="in-memory", loader=lambda *_: build_tiny_flux()), tiny=False)
    request = GenerateRequest(prompt="photo of mila", seed=2, width=64, height=64, steps=4)
    assert np.array_equal(np.asarray(engine.generate(request)), np.asarray(built_in_memory.generate(request)))
    with pytest.raises(EngineError, match="Could not load the Flux model"):
        LocalEngine(ModelManager(model=str(tmp_path / "missing")), tiny=False).generate(request)
