"""Shared fixtures: a Studio on the tiny engine in a temporary workspace, and test images."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(items):
    """Wide and browser tests are slow by nature (GBs of weights, a real Chromium): `-m "not slow"` skips them
    without each file having to say so twice."""
    for item in items:
        if item.get_closest_marker("wide") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


def noise_image(seed: int = 0, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "reference.png"
    noise_image(1).save(path)
    return path


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return ROOT / "assets" / "samples" / "astronaut.png"


@pytest.fixture
def studio(tmp_path):
    from lora_studio.config import Settings
    from lora_studio.studio import Studio

    with Studio(Settings(workspace=tmp_path / "ws")) as s:
        yield s


@pytest.fixture
def models(studio):
    """The studio's Settings → Models service, as on a machine with no GPU (the seam the service takes)."""
    studio.models._gpu_bytes = lambda: None
    return studio.models


@pytest.fixture(scope="session")
def tiny_pipe():
    from lora_studio.engines.builtin.tiny import build_tiny_flux

    return build_tiny_flux()


@pytest.fixture(scope="session")
def wide_pipe():
    """FLUX.1-dev's real widths, one block of each kind (engines/builtin/wide.py), built once per session (~20 s).
    Tests borrow it through `wide`, which puts it back as it was."""
    from lora_studio.engines.builtin.wide import build_wide_flux

    pipe = build_wide_flux()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def wide(wide_pipe):
    yield wide_pipe
    reset_pipe(wide_pipe)


def reset_pipe(pipe) -> None:
    """Unload every LoRA, forget a hot-swap preparation, eval mode, no gradients."""
    transformer = pipe.transformer
    if getattr(transformer, "peft_config", None):
        pipe.unload_lora_weights()
    transformer._prepare_lora_hotswap_kwargs = None
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).eval().requires_grad_(False)
    assert not any("lora" in name for name, _ in transformer.named_parameters())


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny matrices gain nothing from threads, two threads fighting other
    processes on a shared 2-core machine make each step many times slower, and forked workers then sum
    floats in the parent's order (bit-equal results)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def klein_repo_folders(tmp_path_factory):
    """The tiny Klein saved once per session as the fake hub's repos ({distilled: folder})."""
    from tests.fake_hub import klein_folders

    return klein_folders(tmp_path_factory.mktemp("klein-repos"))
