"""What does our model manager cost per image over the plain diffusers pipeline?

Both draw the same image (same weights, prompt, seed, steps) with the same LoRA loaded at the same
strength: ours through `LocalEngine.generate` (lock, LoRA bookkeeping, set_adapters, OOM handling),
the plain one through `FluxPipeline.__call__` with the LoRA set once. They run in turns (ours, plain,
plain, ours, ...) in one process; the first call of each is a warm-up and is dropped; medians are
compared. The images are checked to be identical, so the comparison is like for like.

    python bench/generate.py                  # tiny Flux on the CPU; prints `ratio: N.NN` last (goal <= 1.05)
    python bench/generate.py --wide --size 256 --steps 2 --turns 2    # FLUX.1-dev widths, one block each
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lora_studio.engines.base import GenerateRequest, LoraWeight  # noqa: E402
from lora_studio.engines.local.engine import TINY_SEQUENCE, LocalEngine  # noqa: E402
from lora_studio.engines.local.model_manager import ModelManager  # noqa: E402
from lora_studio.engines.speed.settings import OFF  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_suite import random_lora  # noqa: E402

GOAL = 1.05
PROMPT = "photo of mila_v1 at the beach"
WEIGHT = 0.8


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", action="store_true", help="FLUX.1-dev widths, one block of each kind")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--turns", type=int, default=8, help="calls per side after the warm-up")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the tiny model's matmuls are too small to split, and one "
                             "thread keeps timings steady on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.wide:
        from lora_studio.engines.local.model_kind import WIDE_ID as model
        from lora_studio.engines.builtin.wide import build_wide_flux as build
    else:
        from lora_studio.engines.local.model_kind import TINY_ID as model
        from lora_studio.engines.builtin.tiny import build_tiny_flux as build

    plain = build()
    plain.set_progress_bar_config(disable=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    lora = random_lora(plain.transformer, folder / "bench.safetensors", seed=0, scale=0.05)
    plain.load_lora_weights(str(lora), adapter_name="bench")
    plain.set_adapters(["bench"], adapter_weights=[WEIGHT])

    engine = LocalEngine(ModelManager(model=model, speed=OFF), tiny=not args.wide, max_sequence_length=TINY_SEQUENCE)
    engine._steps = lambda steps: steps  # the same step count on both sides, whatever the tiny cap
    request = GenerateRequest(prompt=PROMPT, seed=7, width=args.size, height=args.size, steps=args.steps,
                              loras=(LoraWeight("bench", WEIGHT, lora),))

    def ours():
        return engine.generate(request)

    def theirs():
        return plain(prompt=PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps,
                     guidance_scale=request.guidance, max_sequence_length=TINY_SEQUENCE,
                     generator=torch.Generator("cpu").manual_seed(request.seed)).images[0]

    same = np.array_equal(np.asarray(ours()), np.asarray(theirs()))  # also the warm-up of both
    times = {"ours": [], "plain": []}
    for turn in range(args.turns):
        order = (("ours", ours), ("plain", theirs)) if turn % 2 == 0 else (("plain", theirs), ("ours", ours))
        for name, call in order:
            tick = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - tick)
    ours_s, plain_s = statistics.median(times["ours"]), statistics.median(times["plain"])
    ratio = ours_s / plain_s
    print(f"{'wide' if args.wide else 'tiny'} Flux, {args.size}², {args.steps} steps, LoRA rank 16 at {WEIGHT}, "
          f"{args.turns} turns per side after a warm-up, on {engine.manager.device}")
    print(f"plain diffusers: median {plain_s * 1000:.1f} ms/image")
    print(f"our engine:      median {ours_s * 1000:.1f} ms/image (base loads: {engine.manager.load_count})")
    print(f"same image: {'yes' if same else 'NO'}; goal: ratio <= {GOAL}")
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
