"""Strength sweep cost: one loaded base + set_adapters per cell, against the alternatives.

Measured side by side in one run on the tiny Flux (CPU):
  A. a K-strength sweep through the tester's path (one pipeline, LoRA loaded once, weight per cell);
  B. K single generations with the LoRA already loaded at a fixed weight (the floor);
  C. reloading the pipeline and the LoRA for every cell (what a naive script does).
Prints seconds for each and `ratio: A/B` last (goal ≤ 1.10).
Run from the repo root: python bench/sweep.py
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_studio.engines.base import GenerateRequest, LoraWeight  # noqa: E402
from lora_studio.engines.local.engine import LocalEngine  # noqa: E402
from lora_studio.engines.local.model_manager import ModelManager  # noqa: E402
from tests.lora_factory import make_tiny_lora  # noqa: E402

STRENGTHS = (0.0, 0.6, 0.8, 1.0, 1.2)
REPEATS = 5


def request(lora: LoraWeight) -> GenerateRequest:
    return GenerateRequest(prompt="photo of mila_v1 in a café", seed=1, width=64, height=64, steps=4,
                           loras=(lora,))


def main() -> None:
    lora_path = make_tiny_lora(Path(tempfile.mkdtemp()) / "mila.safetensors", seed=1)
    engine = LocalEngine(ModelManager(), tiny=True)
    engine.generate(request(LoraWeight("mila", 1.0, lora_path)))  # load base + adapter, warm up

    def sweep() -> None:
        for s in STRENGTHS:
            engine.generate(request(LoraWeight("mila", s, lora_path)))

    def fixed() -> None:
        for _ in STRENGTHS:
            engine.generate(request(LoraWeight("mila", 1.0, lora_path)))

    def reload_each() -> None:
        for s in STRENGTHS:
            fresh = LocalEngine(ModelManager(), tiny=True)
            fresh.generate(request(LoraWeight("mila", s, lora_path)))

    times = {"sweep": [], "fixed": [], "reload": []}
    for _ in range(REPEATS):  # interleaved, so drift hits all three alike
        for name, fn in (("sweep", sweep), ("fixed", fixed), ("reload", reload_each)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    k = len(STRENGTHS)
    print(f"tiny Flux, {k} strengths, median of {REPEATS} interleaved runs")
    print(f"A sweep (one base, set_adapters per cell): {med['sweep']:.3f} s  ({med['sweep'] / k * 1000:.0f} ms/cell)")
    print(f"B {k} generations, LoRA loaded, fixed weight: {med['fixed']:.3f} s")
    print(f"C reload pipeline + LoRA per cell:          {med['reload']:.3f} s")
    print(f"base loads during A and B: {engine.manager.load_count}")
    print(f"reload/sweep: {med['reload'] / med['sweep']:.2f}x")
    print(f"ratio: {med['sweep'] / med['fixed']:.2f}")


if __name__ == "__main__":
    main()
