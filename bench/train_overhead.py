"""How much does our trainer cost per step over a bare diffusers + peft flow-matching loop?

Both train the same LoRA (rank 16, same target layers, batch 1, 64x64 images, cached latents and
text embeddings) on the same small random FLUX transformer, a few layers bigger than the tiny
engine's so that a step's time is dominated by the model rather than by Python. They run in turns
(ours, bare, bare, ours, ...) in one process; each turn's first step is a warm-up and is dropped, and
the median time per step over all turns is compared.

"Our" step time is the wall time between consecutive `reporter.progress` calls, so it includes
everything the trainer does per step (cancel check, batch lookup, reporting, metrics). The bare step
is noise -> pack -> forward -> loss -> backward -> clip -> AdamW, nothing else.

Also checks that, once the cache is filled, our steps run no text encoder and no VAE encode.

    python bench/train_overhead.py          # from the repository root; prints `ratio: N.NN` last
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import FluxPipeline, FluxTransformer2DModel  # noqa: E402
from peft import LoraConfig  # noqa: E402
from PIL import Image  # noqa: E402

from lora_studio.engines.base import TrainRequest  # noqa: E402
from lora_studio.engines.builtin.tiny import TEXT_WIDTH, tiny_components  # noqa: E402
from lora_studio.progress import NullReporter  # noqa: E402
from lora_studio.engines.lora.targets import target_modules  # noqa: E402
from lora_studio.training.trainer import train_lora  # noqa: E402

RESOLUTION = 64
RANK = 16
STEPS_PER_TURN = 10
TURNS = 4  # per side
GOAL = 1.10


def bench_pipeline() -> FluxPipeline:
    components = tiny_components()
    torch.manual_seed(1)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=3, attention_head_dim=32,
        num_attention_heads=4, joint_attention_dim=TEXT_WIDTH, pooled_projection_dim=TEXT_WIDTH,
        axes_dims_rope=[8, 12, 12], guidance_embeds=True,
    ).eval()
    transformer.requires_grad_(False)
    components["transformer"] = transformer
    return FluxPipeline(**components)


def make_dataset(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(4):
        rgb = np.random.default_rng(i).integers(0, 255, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"ohwx, picture {i}")


class TimingReporter(NullReporter):
    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def progress(self, fraction: float, message: str = "") -> None:
        self.stamps.append(time.perf_counter())
        super().progress(fraction, message)


class EncoderCalls:
    """Counts text-encoder forwards and VAE encodes."""

    def __init__(self, pipe) -> None:
        self.count = 0
        self.hooks = [m.register_forward_pre_hook(self._hit) for m in (pipe.text_encoder, pipe.text_encoder_2)]
        encode = pipe.vae.encode

        def counting_encode(*args, **kwargs):
            self.count += 1
            return encode(*args, **kwargs)

        pipe.vae.encode = counting_encode

    def _hit(self, *args) -> None:
        self.count += 1


def our_turn(pipe, request: TrainRequest) -> list[float]:
    reporter = TimingReporter()
    train_lora(pipe, request, reporter)
    stamps = reporter.stamps[: request.steps]  # the last progress call is the "done" message
    return [b - a for a, b in zip(stamps, stamps[1:])]  # drops step 1 (warm-up)


def bare_inputs(pipe) -> dict:
    """Latents and text embeddings computed once, outside the timed loop (the bare loop's cache)."""
    vae = pipe.vae
    pixels = torch.rand(1, 3, RESOLUTION, RESOLUTION) * 2 - 1
    with torch.no_grad():
        latent = (vae.encode(pixels).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
        prompt_embeds, pooled, text_ids = pipe.encode_prompt("ohwx, picture 0", prompt_2=None, max_sequence_length=512)
    return dict(latent=latent, prompt_embeds=prompt_embeds, pooled=pooled, text_ids=text_ids)


def bare_turn(pipe, inputs: dict, steps: int) -> list[float]:
    transformer = pipe.transformer
    targets = target_modules(transformer, train_mlp=True)
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=targets), "bare")
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    x = inputs["latent"]
    b, c, h, w = x.shape
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
    guidance = torch.ones(b)
    transformer.train()
    times = []
    try:
        for _ in range(steps):
            start = time.perf_counter()
            noise = torch.randn_like(x)
            sigma = torch.rand(b)
            noisy = (1 - sigma.view(-1, 1, 1, 1)) * x + sigma.view(-1, 1, 1, 1) * noise
            pred = transformer(
                hidden_states=FluxPipeline._pack_latents(noisy, b, c, h, w), timestep=sigma, guidance=guidance,
                pooled_projections=inputs["pooled"], encoder_hidden_states=inputs["prompt_embeds"],
                txt_ids=inputs["text_ids"], img_ids=img_ids, return_dict=False,
            )[0]
            pred = FluxPipeline._unpack_latents(pred, h, w, 1)
            loss = torch.nn.functional.mse_loss(pred.float(), (noise - x).float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            times.append(time.perf_counter() - start)
    finally:
        transformer.unload_lora()
        transformer.eval()
    return times[1:]  # drop the warm-up step


def main() -> float:
    torch.set_num_threads(1)  # small matrices; keeps timings steady on a shared 2-core machine
    started = time.perf_counter()
    pipe = bench_pipeline()
    pipe.set_progress_bar_config(disable=True)
    root = Path(tempfile.mkdtemp(prefix="lora_bench_"))
    try:
        make_dataset(root / "data")

        def request(steps: int) -> TrainRequest:
            return TrainRequest(
                dataset_dir=root / "data", output_dir=root / "out", work_dir=root / "work", trigger="ohwx",
                steps=steps, rank=RANK, alpha=RANK, learning_rate=1e-4, resolution=RESOLUTION,
                checkpoint_every=0, sample_every=0, resume=False,
            )

        calls = EncoderCalls(pipe)
        train_lora(pipe, request(1), NullReporter())  # fills the cache
        first_pass = calls.count
        calls.count = 0
        inputs = bare_inputs(pipe)  # outside the counted region: the bare loop's own one-off encode
        encoder_calls_before = calls.count
        ours: list[float] = []
        bare: list[float] = []
        for turn in range(TURNS):
            order = (("ours", "bare") if turn % 2 == 0 else ("bare", "ours"))
            for side in order:
                if side == "ours":
                    before = calls.count
                    ours += our_turn(pipe, request(STEPS_PER_TURN))
                    assert calls.count == before, "a cached step ran a text encoder or the VAE encoder"
                else:
                    bare += bare_turn(pipe, inputs, STEPS_PER_TURN)
        cached_calls = calls.count - encoder_calls_before
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ours_ms, bare_ms = statistics.median(ours) * 1000, statistics.median(bare) * 1000
    ratio = ours_ms / bare_ms
    params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"model: random FLUX transformer, {params / 1e6:.2f} M params; {RESOLUTION}x{RESOLUTION} px, batch 1, rank {RANK}")
    print(f"encoder calls: first pass {first_pass} (VAE encodes + text-encoder forwards), cached runs {cached_calls}")
    print(f"steps measured: ours {len(ours)}, bare {len(bare)} ({TURNS} interleaved turns each)")
    print(f"ours: median {ours_ms:.1f} ms/step (p25 {np.percentile(ours, 25) * 1000:.1f}, p75 {np.percentile(ours, 75) * 1000:.1f})")
    print(f"bare: median {bare_ms:.1f} ms/step (p25 {np.percentile(bare, 25) * 1000:.1f}, p75 {np.percentile(bare, 75) * 1000:.1f})")
    print(f"goal: ratio <= {GOAL:.2f}; total bench time {time.perf_counter() - started:.0f} s")
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
