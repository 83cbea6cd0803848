"""FLUX.2 [klein] rows of bench/gpu_suite.py: the whole 4 B (or 9 B) with random weights, measured.

    klein_generate  text-to-image 1024², the distilled checkpoint's 4 steps, a rank-16 LoRA loaded:
                    plain diffusers (Flux2KleinPipeline) vs our engine with auto speed settings
    klein_sheet     the 30-image sheet as reference edits by the same pipeline, on our engine
    klein_train     training at 512², rank 16, through the real trainer, in every memory mode
    klein9_train    the same on 9 B in two modes (its 35 GB of weights come last)

The model is built on the GPU in bf16 (engines/builtin/klein_wide.build_klein, every block, Qwen3 at
its real size and vocabulary) and saved once as a diffusers folder that says it is distilled, so every
row loads through the same code path as the real checkpoint. Speed and memory do not depend on the
weights' values, and the base checkpoint has the same architecture: the training rows train the one
folder (the manager then trains on the distilled transformer and says so), which keeps one 16 GB write.
On --smoke the wide Klein (4 B's widths, one block of each kind) runs at the CPU's tiny sizes.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpu_common import PROMPT, RANK, diff_text, free, make_dataset, peak_gb, pixels, random_lora, reset_peak, timed, \
    train_cells, verdict
from lora_studio.config import MEMORY_MODES, SpeedRequest
from lora_studio.engines.base import EditRequest, GenerateRequest, LoraWeight
from lora_studio.engines.family import KLEIN
from lora_studio.engines.local.engine import LocalEngine
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.engines.speed.settings import OFF, SpeedSettings

KLEIN_GROUPS = ("klein_generate", "klein_sheet", "klein_train", "klein9_train")
TRAIN_MODES = tuple(m for m in MEMORY_MODES if m not in ("auto", "offload"))  # "offload" is "checkpointing"
GOALS = {"klein_generate": "≤ 1 s per 1024² image on the distilled 4 B (H100)",
         "klein_train": "4 B at 512², rank 16: ≤ 8 GB in the lightest mode, ≤ 16 GB by default"}


def klein_tflop(config: dict, image_tokens: int, text_tokens: int) -> float:
    """Matmul TFLOP of one Klein transformer forward: per token 13 d² multiply-adds in every block (a double
    stream: q, k, v, out and a SwiGLU MLP at ratio 3; a single block: the fused input and output), plus
    2 n² d of attention per block."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    n = image_tokens + text_tokens
    layers = config["num_layers"] + config["num_single_layers"]
    return 2 * layers * (13 * d * d * n + 2 * n * n * d) / 1e12


def klein_folder(ctx, architecture: str = "klein-4b") -> Path:
    """The architecture's random-weight folder (distilled), built once and reused by later runs."""
    key = f"weights:{architecture}"
    if key in ctx.built:
        return ctx.built[key]
    cfg = ctx.cfg
    folder = cfg.work / (f"wide-{architecture}" if cfg.smoke else f"{architecture}-random")
    if not (folder / "model_index.json").is_file():
        from lora_studio.engines.builtin.klein_wide import build_klein

        print(f"Building {'wide' if cfg.smoke else 'full-size'} {architecture} with random weights in {folder} ...",
              flush=True)
        pipe = build_klein(distilled=True, architecture=architecture, full_size=not cfg.smoke, device=cfg.device,
                           dtype=torch.float32 if cfg.smoke else torch.bfloat16)
        pipe.save_pretrained(folder)
        del pipe
        free(cfg)
    ctx.built[key] = folder
    return folder


def klein_lora(ctx, folder: Path) -> Path:
    path = ctx.cfg.work / "loras" / f"{folder.name}.safetensors"
    if path.is_file():
        return path
    from diffusers import Flux2Transformer2DModel

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel.from_config(Flux2Transformer2DModel.load_config(folder / "transformer"))
    return random_lora(transformer, path, seed=3, rank=RANK)


def request(ctx, lora: Path) -> GenerateRequest:
    defaults = KLEIN.distilled_defaults
    return GenerateRequest(prompt=PROMPT, seed=7, width=ctx.cfg.size, height=ctx.cfg.size,
                           steps=1 if ctx.cfg.smoke else defaults.steps, guidance=defaults.guidance,
                           loras=(LoraWeight("a", 1.0, lora),))


def speed(ctx) -> SpeedSettings | SpeedRequest:
    """Auto on a GPU; on --smoke the CPU-runnable settings that change the model and the sheet."""
    if ctx.cfg.smoke:
        return replace(OFF, fuse_qkv=True, batch_edits=2, reason="Smoke run: fused QKV, two edits per call.")
    return SpeedRequest()


def engine(ctx, folder: Path) -> LocalEngine:
    torch._dynamo.reset()  # a fresh engine compiles its own blocks
    manager = ModelManager(model=str(folder), device=ctx.cfg.device, speed=speed(ctx))
    return LocalEngine(manager, tiny=False, max_sequence_length=ctx.cfg.text_tokens)


def cells(ctx, generate, settings: str, transformer_config: dict, note: str = "") -> dict:
    cfg = ctx.cfg
    first, image = timed(cfg, generate)  # warm-up: compiles, fills caches
    reset_peak(cfg)
    seconds = [timed(cfg, generate)[0] for _ in range(cfg.images)] if not cfg.smoke else [first]
    per_image = statistics.median(seconds)
    steps = 1 if cfg.smoke else KLEIN.distilled_defaults.steps
    tflop = klein_tflop(transformer_config, (cfg.size // 16) ** 2, cfg.text_tokens) * steps
    return {"settings": settings, "s/image": per_image, "TFLOP/s": tflop / per_image, "peak GB": peak_gb(cfg),
            "notes": f"first image {first:.1f} s{note}; median of {len(seconds)}", "_image": image}


def row_plain(ctx) -> dict:
    from diffusers import Flux2KleinPipeline

    cfg, folder = ctx.cfg, klein_folder(ctx)
    pipe = Flux2KleinPipeline.from_pretrained(folder, dtype=ctx.dtype).to(cfg.device)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(klein_lora(ctx, folder)), adapter_name="a")
    pipe.set_adapters(["a"], adapter_weights=[1.0])
    req = request(ctx, klein_lora(ctx, folder))

    def generate():
        return pipe(prompt=PROMPT, width=cfg.size, height=cfg.size, num_inference_steps=req.steps,
                    guidance_scale=req.guidance, max_sequence_length=cfg.text_tokens,
                    generator=torch.Generator("cpu").manual_seed(req.seed)).images[0]

    found = cells(ctx, generate, f"{str(ctx.dtype).removeprefix('torch.')}, LoRA as a named adapter",
                  dict(pipe.transformer.config))
    ctx.klein["plain_image"] = pixels(found.pop("_image"))
    found["vs plain image"] = "—"
    pipe = None  # noqa: F841 - frees the plain pipeline before ours loads
    free(cfg)
    return found


def row_ours(ctx) -> dict:
    folder = klein_folder(ctx)
    ours = engine(ctx, folder)
    ctx.klein["engine"] = ours
    req = request(ctx, klein_lora(ctx, folder))
    config = dict(ours.manager.text_to_image().transformer.config)
    found = cells(ctx, lambda: ours.generate(req), ours.manager.speed.summary(), config,
                  " (includes compiling)" if ours.manager.speed.compile else "")
    found["vs plain image"] = diff_text(found.pop("_image"), ctx.klein.get("plain_image"))
    found["notes"] = f"{verdict(found['s/image'], 1.0, 's')} (H100); {found['notes']}. {ours.manager.speed.reason}"
    return found


def row_sheet(ctx) -> dict:
    from lora_studio.services.sheet_prompts import SHEET_PROMPTS

    cfg = ctx.cfg
    ours = ctx.klein.get("engine") or engine(ctx, klein_folder(ctx))
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (cfg.size, cfg.size, 3), dtype=np.uint8))
    steps = 1 if cfg.smoke else KLEIN.distilled_defaults.sheet_steps
    requests = [EditRequest(image=reference, prompt=p.prompt, seed=1000 + p.slot, width=cfg.size, height=cfg.size,
                            steps=steps, guidance=KLEIN.distilled_defaults.sheet_guidance)
                for p in SHEET_PROMPTS[:cfg.sheet_images]]
    first = 0.0
    if not cfg.smoke:  # warm-up: compiles the edit's longer sequence
        first, _ = timed(cfg, lambda: ours.edit_many(requests[:ours.edit_batch]))
    reset_peak(cfg)
    total, images = timed(cfg, lambda: ours.edit_many(requests))
    config = dict(ours.manager.sheet().transformer.config)
    tflop = klein_tflop(config, 2 * (cfg.size // 16) ** 2, cfg.text_tokens) * steps
    return {"settings": ours.manager.speed.summary(), "images": len(images), "total s": total,
            "s/image": total / len(images), "TFLOP/s": tflop * len(images) / total, "peak GB": peak_gb(cfg),
            "notes": f"{ours.edit_batch} edits per call, {steps} steps" + (f"; warm-up call {first:.1f} s" if first else "")
                     + "; TFLOP count includes the reference image's tokens"}


def drop_engine(ctx) -> None:
    ours = ctx.klein.pop("engine", None)
    if ours is not None:
        ours.unload()
    free(ctx.cfg)


def train_rows(ctx, architecture: str, table: str, modes: tuple[str, ...]) -> None:
    """One row per memory mode at the first training resolution (512² on a GPU): s/step and peak GB."""
    resolution = ctx.cfg.train_resolutions[0]
    for mode in modes:
        def measure(mode=mode):
            manager = ModelManager(model=str(klein_folder(ctx, architecture)), device=ctx.cfg.device,
                                   memory_mode=mode, speed=OFF)
            try:
                found = train_cells(ctx, manager, mode, resolution, goals={})
            finally:
                manager.unload()
                free(ctx.cfg)
            goal = {"checkpointing": 16.0, "lowvram": 8.0}.get(mode) if architecture == "klein-4b" else None
            if goal and resolution == 512:
                found["notes"] = f"{verdict(found['peak GB'], goal, 'GB')}; {found['notes']}"
            return found
        ctx.row(table, f"{mode} · {resolution}²", measure, kind=f"klein_train:{mode}",
                needs=(f"weights:{architecture}",))


def run(ctx, groups: list[str]) -> None:
    """The Klein rows, most telling first (see bench/gpu_budget.py)."""
    needs = ("weights:klein-4b",)
    if "klein_generate" in groups:
        ctx.row("klein_generate", "plain diffusers", lambda: row_plain(ctx), kind="klein_generate:plain", needs=needs)
        ctx.row("klein_generate", "ours (auto speed)", lambda: row_ours(ctx), kind="klein_generate:ours", needs=needs)
    if "klein_train" in groups:
        drop_engine(ctx)
        torch.set_grad_enabled(True)
        train_rows(ctx, "klein-4b", "klein_train", TRAIN_MODES[:1] if ctx.cfg.smoke else TRAIN_MODES)
        torch.set_grad_enabled(False)
    if "klein_sheet" in groups:
        ctx.row("klein_sheet", "ours (auto speed)", lambda: row_sheet(ctx), kind="klein_sheet", needs=needs)
    drop_engine(ctx)


def run_last(ctx, groups: list[str]) -> None:
    """The 9 B rows: its weights take longest to write, so they come after everything else."""
    if "klein9_train" in groups and not ctx.cfg.smoke:
        torch.set_grad_enabled(True)
        train_rows(ctx, "klein-9b", "klein9_train", ("checkpointing", "lowvram"))
        torch.set_grad_enabled(False)


TABLES = [
    ("klein_generate", "FLUX.2 [klein] 4B text-to-image, distilled, 4 steps, a rank-16 LoRA loaded",
     GOALS["klein_generate"], ["engine", "settings", "s/image", "TFLOP/s", "peak GB", "vs plain image", "notes"]),
    ("klein_train", "FLUX.2 [klein] 4B training, rank 16 (s/step after one warm-up step; peak GB includes the base)",
     GOALS["klein_train"], ["memory mode · resolution", "s/step", "peak GB", "notes"]),
    ("klein_sheet", "FLUX.2 [klein] 4B character sheet (reference edits by the same pipeline)", "",
     ["engine", "settings", "images", "total s", "s/image", "TFLOP/s", "peak GB", "notes"]),
    ("klein9_train", "FLUX.2 [klein] 9B training, rank 16", "", ["memory mode · resolution", "s/step", "peak GB",
                                                                  "notes"]),
]
