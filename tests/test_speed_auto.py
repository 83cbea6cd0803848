"""What `auto` picks for a GPU, and how flags and environment variables reach the speed settings.

auto_speed is a pure function of a small GpuInfo, so made-up GPUs stand in for the real ones.
"""
from __future__ import annotations

import pytest

from lora_studio.cli import build_parser, settings_from
from lora_studio.config import Settings, SpeedRequest
from lora_studio.engines.speed.settings import GpuInfo, SpeedSettings, auto_speed, resolve_speed

H100 = GpuInfo("cuda", "NVIDIA H100 80GB HBM3", total_gb=79.2, free_gb=78.6, capability=(9, 0))
RTX4090 = GpuInfo("cuda", "NVIDIA GeForce RTX 4090", total_gb=23.6, free_gb=23.1, capability=(8, 9))
A100_40 = GpuInfo("cuda", "NVIDIA A100-SXM4-40GB", total_gb=39.4, free_gb=39.0, capability=(8, 0))
RTX3060 = GpuInfo("cuda", "NVIDIA GeForce RTX 3060", total_gb=11.8, free_gb=11.2, capability=(8, 6))
T4 = GpuInfo("cuda", "Tesla T4", total_gb=14.6, free_gb=14.5, capability=(7, 5))
P100 = GpuInfo("cuda", "Tesla P100-PCIE-16GB", total_gb=15.9, free_gb=15.6, capability=(6, 0))


def test_h100_gets_the_full_fast_path():
    chosen = auto_speed(H100)
    assert (chosen.compile, chosen.quantize, chosen.fuse_qkv, chosen.group_offload) == (True, "fp8", True, None)
    assert chosen.batch_edits == 3 and chosen.first_block_cache == 0 and chosen.hotswap_rank == 96
    assert chosen.reason.startswith("Auto speed for NVIDIA H100 80GB HBM3 (79 of 79 GB free, compute 9.0): "
                                    "regional compile with LoRA hot-swap + fp8 base + fused QKV + 3 sheet edits")
    assert "fp8 because compute 8.9+ has fp8 matmuls" in chosen.reason
    assert chosen.reason.endswith("first-block cache off (it changes images).")


def test_rtx_4090_gets_fp8_and_compile_with_the_encoders_streamed():
    chosen = auto_speed(RTX4090)
    assert (chosen.compile, chosen.quantize, chosen.fuse_qkv, chosen.group_offload) == (True, "fp8", False, "encoders")
    assert chosen.batch_edits == 1 and chosen.hotswap_rank == 64
    assert "the text encoders stream from CPU memory" in chosen.reason


def test_a100_has_no_fp8_but_compiles_and_fuses():
    chosen = auto_speed(A100_40)
    assert (chosen.compile, chosen.quantize, chosen.fuse_qkv, chosen.group_offload) == (True, None, False, None)
    big = auto_speed(GpuInfo("cuda", "NVIDIA A100-SXM4-80GB", 79.2, 79.0, (8, 0)))
    assert (big.compile, big.quantize, big.fuse_qkv, big.batch_edits) == (True, None, True, 3)


@pytest.mark.parametrize("gpu", [RTX3060, T4, P100], ids=["3060-12GB", "T4-15GB", "P100-16GB"])
def test_small_gpus_get_an_8bit_base_streamed_block_by_block(gpu):
    chosen = auto_speed(gpu)
    assert (chosen.quantize, chosen.group_offload, chosen.compile, chosen.fuse_qkv) == ("8bit", "all", False, False)
    assert "an 8-bit base because" in chosen.reason and "under 16 GB the blocks must stream" in chosen.reason


def test_free_memory_counts_not_just_the_card():
    busy = GpuInfo("cuda", "NVIDIA H100 80GB HBM3", total_gb=79.2, free_gb=20.0, capability=(9, 0))
    chosen = auto_speed(busy)
    assert chosen.quantize == "fp8" and chosen.group_offload == "encoders" and not chosen.fuse_qkv


def test_zero_gpu_batches_edits_and_nothing_that_a_fresh_worker_would_redo():
    chosen = auto_speed(GpuInfo("cuda", "ZeroGPU", zero_gpu=True))
    assert chosen.summary() == "3 sheet edits per call"
    assert "a fresh worker would redo them every call" in chosen.reason


@pytest.mark.parametrize("kind", ["cpu", "mps"])
def test_no_cuda_means_nothing_on(kind):
    chosen = auto_speed(GpuInfo(kind))
    assert chosen.summary() == "none" and chosen.batch_edits == 1
    assert chosen.reason.startswith(f"Speed settings off: no NVIDIA GPU ({kind})")


def test_flags_override_auto_and_off_turns_it_all_off(monkeypatch):
    monkeypatch.setattr("lora_studio.engines.memory.plan.library_available", lambda name: True)  # torchao here or not
    mine = resolve_speed(SpeedRequest(compile=False, batch_edits=2), H100)
    assert not mine.compile and mine.quantize == "fp8" and mine.batch_edits == 2
    assert "Set by you: compile off, batch edits 2." in mine.reason
    off = resolve_speed(SpeedRequest(mode="off", fuse_qkv=True), H100)
    assert off.fuse_qkv and not off.compile and off.quantize is None and off.hotswap_rank == 96
    assert resolve_speed(SpeedRequest(), H100, tiny=True).summary() == "none"
    assert resolve_speed(SpeedRequest(quantize="none", group_offload="off"), RTX3060).summary() == "none"


def test_settings_from_environment_and_flags():
    env = {"LORA_STUDIO_COMPILE": "1", "LORA_STUDIO_QUANTIZE": "8bit", "LORA_STUDIO_BATCH_EDITS": "2",
           "LORA_STUDIO_FIRST_BLOCK_CACHE": "0.05", "LORA_STUDIO_SPEED": "off"}
    speed = Settings.from_env(env).speed
    assert speed == SpeedRequest(mode="off", compile=True, quantize="8bit", batch_edits=2, first_block_cache=0.05)
    assert Settings.from_env(env, compile=False, group_offload="all").speed.explicit() == {
        "compile": False, "quantize": "8bit", "group_offload": "all", "batch_edits": 2, "first_block_cache": 0.05}
    args = build_parser().parse_args(["jobs", "--no-compile", "--fuse-qkv", "--quantize", "fp8",
                                      "--group-offload", "encoders", "--batch-edits", "3", "--speed", "off"])
    assert settings_from(args).speed == SpeedRequest(mode="off", compile=False, fuse_qkv=True, quantize="fp8",
                                                     group_offload="encoders", batch_edits=3)
    assert settings_from(build_parser().parse_args(["jobs"])).speed == SpeedRequest()


def test_launch_reads_the_same_flags():
    import launch

    args = launch.parse_args(["--compile", "--first-block-cache", "0.1"])
    assert args.compile is True and args.first_block_cache == 0.1


@pytest.mark.parametrize("bad, words", [
    (dict(mode="fast"), "Unknown speed mode"), (dict(quantize="int4"), "Unknown base quantization"),
    (dict(group_offload="some"), "Unknown group offloading"), (dict(batch_edits=0), "between 1 and 8"),
    (dict(first_block_cache=1.5), "below 1"),
])
def test_bad_speed_values_are_explained(bad, words):
    with pytest.raises(ValueError, match=words):
        SpeedRequest(**bad)
    with pytest.raises(ValueError, match="LORA_STUDIO_BATCH_EDITS must be a number"):
        Settings.from_env({"LORA_STUDIO_BATCH_EDITS": "many"})


def test_the_choice_is_shown_in_the_engine_description():
    from lora_studio.engines.local.engine import LocalEngine
    from lora_studio.engines.local.model_manager import ModelManager

    engine = LocalEngine(ModelManager(model="some/flux", speed=SpeedSettings(fuse_qkv=True, reason="Chosen for test.")))
    assert engine.describe().endswith("Chosen for test.")
    auto = LocalEngine(ModelManager(model="some/flux"))
    assert "Speed settings off: no NVIDIA GPU (cpu)" in auto.describe()


def test_the_banner_says_it_before_any_model_loads(tmp_path):
    from lora_studio.studio import Studio

    settings = Settings.from_env({}, workspace=tmp_path / "ws", model="some/flux", compile=True)
    with Studio(settings, start=False) as studio:
        text = studio.engine_description()
    assert text.startswith("Local FLUX.1 from some/flux (loaded by the first job). Speed settings off: no NVIDIA")
    assert "Set by you: compile on." in text


def test_a_quantized_memory_mode_decides_the_base(monkeypatch):
    monkeypatch.setattr("lora_studio.engines.memory.plan.library_available", lambda name: True)
    chosen = resolve_speed(SpeedRequest(), H100, memory_mode="nf4")
    assert chosen.quantize is None and not chosen.fuse_qkv and chosen.compile
    assert chosen.reason.endswith("Base weights left to memory mode nf4 (no speed quantization, no fused QKV).")
