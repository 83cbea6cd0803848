"""What does switching between FLUX.1-dev and FLUX.1-Kontext-dev cost, against a cold load?

Two model folders are written first (a dev pipeline, and a Kontext repo holding only its own
`transformer/` with different weights, recognised by its model_index.json). Then:

- cold: a fresh model manager loads the dev pipeline and the Kontext transformer from disk;
- swap: with both read once, one switch dev → Kontext → dev (the idle transformer waits in memory).

Medians over `--turns`; the ratio swap / cold is printed last (goal: a small fraction). On a GPU the
swap is a copy between host and GPU memory; on a CPU it is a reference change, so the ratio there shows
the bookkeeping only.

    python bench/kontext_swap.py            # tiny Flux
    python bench/kontext_swap.py --wide     # FLUX.1-dev widths, one block of each kind (~1 GB on disk)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lora_studio.engines.local.model_manager import ModelManager  # noqa: E402


def write_folders(root: Path, wide: bool) -> tuple[str, str]:
    from diffusers import FluxTransformer2DModel

    if wide:
        from lora_studio.engines.builtin.wide import build_wide_flux, transformer_config

        pipe, config = build_wide_flux(), transformer_config()
    else:
        from lora_studio.engines.builtin.tiny import TINY_TRANSFORMER, build_tiny_flux

        pipe, config = build_tiny_flux(), TINY_TRANSFORMER
    pipe.save_pretrained(root / "dev")
    torch.manual_seed(7)
    FluxTransformer2DModel(**config).save_pretrained(root / "kontext" / "transformer")
    (root / "kontext" / "model_index.json").write_text(json.dumps(
        {"_class_name": "FluxKontextPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    return str(root / "dev"), str(root / "kontext")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", action="store_true")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dev, kontext = write_folders(Path(tmp), args.wide)
        colds, swaps = [], []
        for _ in range(args.turns):
            manager = ModelManager(model=dev, kontext_model=kontext, device=args.device)
            colds.append(timed(lambda: (manager.text_to_image(), manager.kontext())))
            swaps.append(timed(lambda: (manager.text_to_image(), manager.kontext(), manager.text_to_image())) / 2)
            assert manager.load_count == 1 and manager.transformers.loads == {"dev": 1, "kontext": 1}
            manager.unload()
        cold, swap = statistics.median(colds), statistics.median(swaps)
        print(f"cold load (dev pipeline + Kontext transformer): {cold:.3f} s")
        print(f"one swap between the transformers: {swap:.4f} s")
        print(f"ratio: {swap / cold:.4f}")


if __name__ == "__main__":
    main()
