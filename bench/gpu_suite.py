"""The GPU table in one command: FLUX.2 [klein] and FLUX.1-dev at full size with random weights, measured.

    python bench/gpu_suite.py --budget 500 --out $OUT/table.md   # a lent GPU: the telling rows in ~9 minutes
    python bench/gpu_suite.py                          # on a CUDA machine: every row, README section rewritten
    python bench/gpu_suite.py --only sheet,train       # some groups; rows from earlier runs are kept
    python bench/gpu_suite.py --smoke --out table.md   # CPU, wide models (real widths, one block each), tiny sizes

It builds each architecture with random weights straight onto the GPU in bf16 and saves it once as a
diffusers folder, so every row loads through the same code path as real weights (quantized memory modes
included); speed and memory do not depend on the values. FLUX.1-Kontext-dev has FLUX.1-dev's
architecture, so FLUX.1's sheet runs FluxKontextPipeline with those weights as its own transformer (a
second folder naming FluxKontextPipeline, swapped in under the same encoders). Rows, grouped for --only,
in the order they run (most telling first, see gpu_budget.py):

    klein_generate  FLUX.2 [klein] 4B 1024², 4 steps, a LoRA: plain diffusers vs our engine (gpu_klein.py)
    klein_train     Klein 4B training at 512², rank 16, in every memory mode
    klein_sheet     Klein 4B's 30-image sheet, reference edits by the same pipeline
    generate   FLUX.1 text-to-image 1024², 28 steps, a rank-16 LoRA loaded: plain diffusers vs our engine
    switch     LoRA switch time on our engine (hot-swap), and whether the next image recompiled
    sheet      the 30-image Kontext character sheet on our engine
    train      training steps at 512² and 1024², rank 16, in every memory mode, through the real trainer
    ablations  our engine with each auto speed setting turned off in turn, and with the first-block cache
    scaling    training in Accelerate worker processes, one row per GPU count (1 … every GPU), one image
               per GPU per step: steps/s, images/s against one GPU, and the start-up cost apart
    klein9_train    Klein 9B training in two modes (its 35 GB of weights are written last)

With `--budget SECONDS` a row whose estimate (and the model it is the first to build) does not fit the
seconds left is not started and says so in its cell. One failing row never stops the run: its error
(or "out of memory") is written in its cell. The table is rewritten after every row, so an interrupted
run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lora_studio.config import MEMORY_MODES, SpeedRequest  # noqa: E402
from lora_studio.engines.base import EditRequest, GenerateRequest, LoraWeight  # noqa: E402
from lora_studio.engines.local.engine import LocalEngine  # noqa: E402
from lora_studio.engines.local.model_manager import ModelManager  # noqa: E402
from lora_studio.engines.speed.settings import OFF, SpeedSettings  # noqa: E402
from lora_studio.engines.builtin.wide import build_flux, transformer_config  # noqa: E402
import gpu_klein  # noqa: E402
from gpu_budget import Budget, estimate  # noqa: E402
from gpu_common import (END, GROUPS, PROMPT, RANK, README, START, Results, diff_text, error_cell, free,  # noqa: E402,F401
                        make_dataset, peak_gb, pixels, random_lora, reset_peak, timed, train_cells, verdict)

@dataclass
class Config:
    smoke: bool
    device: str
    size: int  # text-to-image and Kontext side
    text_tokens: int  # T5 tokens per prompt (FLUX.1-dev: 512)
    steps: int
    images: int  # timed images per generation row (after one warm-up)
    sheet_images: int
    train_resolutions: tuple[int, ...]
    train_steps: int  # the first is a warm-up
    work: Path
    out: Path
    results: Path

    @classmethod
    def from_args(cls, args) -> "Config":
        if args.smoke:
            work = Path(args.work or tempfile.mkdtemp(prefix="gpu_suite_smoke_"))
            return cls(True, args.device or "cpu", 64, 32, 1, 1, 2, (64,), 2, work, args.out, args.out.with_suffix(".json"))
        work = Path(args.work or Path(tempfile.gettempdir()) / "lora_studio_gpu_suite")
        out = args.out or README
        return cls(False, args.device or "cuda", 1024, 512, 28, 3, 30, (512, 1024), 4, work, out,
                   out.with_name("gpu_suite.json") if out == README else out.with_suffix(".json"))


def flux_tflop(config: dict, image_tokens: int, text_tokens: int) -> float:
    """Matmul TFLOP of one FLUX transformer forward (a denoising step): linears plus attention.

    Per token, a double block's stream and a single block both do ~113 M multiply-adds at 3072 wide
    (q, k, v, out and a 4x MLP); attention adds 2 n² d per layer. 1024² is 4096 image + 512 text tokens:
    about 74 TFLOP per step.
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = 4 * d
    n = image_tokens + text_tokens
    double = 4 * d * d + 2 * d * mlp
    single = 3 * d * d + d * mlp + (d + mlp) * d
    layers = config["num_layers"] + config["num_single_layers"]
    macs = (config["num_layers"] * double + config["num_single_layers"] * single) * n + layers * 2 * n * n * d
    return 2 * macs / 1e12


def image_tokens(size: int) -> int:
    return (size // 16) ** 2  # VAE /8, then 2x2 packing


# ---------------------------------------------------------------- the model and the LoRAs


def build_weights(cfg: Config) -> Path:
    """FLUX.1-dev's architecture with random weights as a diffusers folder (built once, reused by later runs)."""
    folder = cfg.work / ("wide" if cfg.smoke else "flux-dev-random")
    if (folder / "model_index.json").is_file():
        return folder
    print(f"Building {'wide' if cfg.smoke else 'full-size'} FLUX.1-dev with random weights in {folder} ...", flush=True)
    dtype = torch.float32 if cfg.smoke else torch.bfloat16
    pipe = build_flux(full_size=not cfg.smoke, device=cfg.device, dtype=dtype)
    pipe.save_pretrained(folder)
    del pipe
    free(cfg)
    return folder


def kontext_folder(folder: Path) -> Path:
    """FLUX.1-Kontext-dev as the app finds it: a model_index.json naming FluxKontextPipeline and a
    transformer/ (a link to the same random weights: same architecture, so speed and memory are its own)."""
    kontext = folder.with_name(folder.name + "-kontext")
    kontext.mkdir(exist_ok=True)
    index = json.loads((folder / "model_index.json").read_text())
    (kontext / "model_index.json").write_text(json.dumps(dict(index, _class_name="FluxKontextPipeline")))
    if not (kontext / "transformer").exists():
        (kontext / "transformer").symlink_to((folder / "transformer").resolve(), target_is_directory=True)
    return kontext


def make_lora(folder: Path, path: Path, seed: int, rank: int = RANK) -> Path:
    """A random LoRA for the transformer saved in `folder` (built on the meta device: no memory used)."""
    if path.is_file():
        return path
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(folder / "transformer")
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(config)
    return random_lora(transformer, path, seed, rank)


@dataclass
class Context:
    cfg: Config
    results: Results
    budget: Budget = field(default_factory=lambda: Budget(None))
    plain_image: np.ndarray | None = None
    plain_switch: float | None = None
    ours: LocalEngine | None = None
    built: dict[str, Path] = field(default_factory=dict)  # "weights:<architecture>" -> its folder
    klein: dict = field(default_factory=dict)  # what the FLUX.2 [klein] rows share (gpu_klein.py)

    @property
    def folder(self) -> Path:
        """FLUX.1-dev's random-weight folder, built by the first row that needs it."""
        if "weights:flux1-dev" not in self.built:
            self.built["weights:flux1-dev"] = build_weights(self.cfg)
        return self.built["weights:flux1-dev"]

    @property
    def loras(self) -> dict[str, Path]:
        return {"a": make_lora(self.folder, self.cfg.work / "loras" / "a.safetensors", seed=1),
                "b": make_lora(self.folder, self.cfg.work / "loras" / "b.safetensors", seed=2)}

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.cfg.device == "cpu" else torch.bfloat16

    def speed(self) -> SpeedSettings | SpeedRequest:
        # Smoke: the CPU's auto is "off"; the CPU-runnable settings that change the model (fused QKV) and the
        # sheet (two edits per call) are on instead, so their code paths run.
        return replace(OFF, fuse_qkv=True, batch_edits=2, reason="Smoke run: fused QKV, two edits per sheet call.") \
            if self.cfg.smoke else SpeedRequest()

    def engine(self, speed=None) -> LocalEngine:
        # A fresh engine compiles its own blocks: forget the last engine's graphs, so dynamo's per-function
        # cache limit never quietly sends a later variant to eager mode.
        torch._dynamo.reset()
        manager = ModelManager(model=str(self.folder), kontext_model=str(kontext_folder(self.folder)),
                               device=self.cfg.device, speed=speed or self.speed())
        return LocalEngine(manager, tiny=False, max_sequence_length=self.cfg.text_tokens)

    def ours_engine(self) -> LocalEngine:
        if self.ours is None:
            self.ours = self.engine()
        return self.ours

    def drop_ours(self) -> None:
        if self.ours is not None:
            self.ours.unload()
            self.ours = None
        free(self.cfg)

    def request(self, lora: str = "a", weight: float = 1.0) -> GenerateRequest:
        return GenerateRequest(prompt=PROMPT, seed=7, width=self.cfg.size, height=self.cfg.size, steps=self.cfg.steps,
                               loras=(LoraWeight(lora, weight, self.loras[lora]),))

    def row(self, table: str, name: str, measure, kind: str = "", needs: tuple[str, ...] = ("weights:flux1-dev",)) -> None:
        """Run one row when its estimate (`kind`'s, plus building the models in `needs` it is the first to
        use) fits the budget; whatever it raises goes into its cells, and the table is saved either way."""
        seconds = estimate(kind or table, self.cfg.smoke) + sum(estimate(n, self.cfg.smoke) for n in needs
                                                                  if n not in self.built)
        if not self.budget.fits(seconds):
            cells = {"notes": self.budget.refusal(seconds)}
            self.budget.skipped.append(f"{table}/{name}")
            self.results.put(table, name, cells)
            self.results.save(self.cfg.out, readme=not self.cfg.smoke)
            print(f"[{table}] {name}: {cells['notes']}", flush=True)
            return
        print(f"[{table}] {name} ...", flush=True)
        free(self.cfg)
        try:
            cells = measure()
        except Exception as exc:  # noqa: BLE001 - one failing row must never stop the suite
            traceback.print_exc()
            cells = {"notes": error_cell(exc)}
            free(self.cfg)
        self.results.put(table, name, cells)
        self.results.save(self.cfg.out, readme=not self.cfg.smoke)
        print(f"[{table}] {name}: {cells}", flush=True)


# ---------------------------------------------------------------- the rows


def generation_cells(ctx: Context, generate, settings: str, warm_note: str = "") -> dict:
    cfg = ctx.cfg
    first, image = timed(cfg, generate)  # warm-up: compiles, fills caches
    reset_peak(cfg)
    seconds = [timed(cfg, generate)[0] for _ in range(cfg.images)] if not cfg.smoke else [first]
    per_image = statistics.median(seconds)
    tflop = flux_tflop(transformer_config(not cfg.smoke), image_tokens(cfg.size), cfg.text_tokens) * cfg.steps
    return {"settings": settings, "s/image": per_image, "TFLOP/s": tflop / per_image, "peak GB": peak_gb(cfg),
            "vs plain image": diff_text(image, ctx.plain_image),
            "notes": f"first image {first:.1f} s{warm_note}; median of {len(seconds)}", "_image": image}


def row_plain(ctx: Context) -> dict:
    from diffusers import FluxPipeline

    cfg = ctx.cfg
    pipe = FluxPipeline.from_pretrained(ctx.folder, dtype=ctx.dtype).to(cfg.device)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(ctx.loras["a"]), adapter_name="a")
    pipe.set_adapters(["a"], adapter_weights=[1.0])
    request = ctx.request()

    def generate():
        return pipe(prompt=PROMPT, width=cfg.size, height=cfg.size, num_inference_steps=cfg.steps,
                    guidance_scale=request.guidance, max_sequence_length=cfg.text_tokens,
                    generator=torch.Generator("cpu").manual_seed(request.seed)).images[0]

    cells = generation_cells(ctx, generate, f"{str(ctx.dtype).removeprefix('torch.')}, LoRA as a named adapter")
    ctx.plain_image = pixels(cells.pop("_image"))
    cells["vs plain image"] = "—"

    def switch():
        pipe.delete_adapters("a")
        pipe.load_lora_weights(str(ctx.loras["b"]), adapter_name="b")
        pipe.set_adapters(["b"], adapter_weights=[1.0])

    ctx.plain_switch = timed(cfg, switch)[0]
    pipe = None  # noqa: F841 - frees the plain pipeline before the next row loads ours
    free(cfg)
    return cells


def row_ours(ctx: Context) -> dict:
    engine = ctx.ours_engine()
    cells = generation_cells(ctx, lambda: engine.generate(ctx.request()), engine.manager.speed.summary(),
                             " (includes compiling)" if engine.manager.speed.compile else "")
    cells.pop("_image")
    cells["notes"] = f"{verdict(cells['s/image'], 3.0, 's')} (H100); {cells['notes']}. {engine.manager.speed.reason}"
    return cells


def row_switch(ctx: Context) -> dict:
    from torch._dynamo.utils import counters

    cfg = ctx.cfg
    engine = ctx.ours_engine()
    engine.generate(ctx.request("a"))  # LoRA a in, compiled
    graphs = counters["stats"]["unique_graphs"]
    times = []
    recompiled = "0"
    switches = (("b", 1.0), ("a", 0.7), ("b", 0.9))
    for i, (lora, weight) in enumerate(switches):
        seconds, _ = timed(cfg, lambda: engine.manager.apply_loras(ctx.request(lora, weight).loras))
        times.append(seconds)
        if not engine.manager.speed.compile and i < len(switches) - 1:
            continue  # nothing to recompile: one image after the last switch shows it still works
        try:
            with torch._dynamo.config.patch(error_on_recompile=engine.manager.speed.compile):
                engine.generate(ctx.request(lora, weight))
        except torch._dynamo.exc.RecompileError as exc:  # the finding, not a crash
            recompiled = f"yes: {str(exc)[:160]}"
    if recompiled == "0":
        recompiled = str(counters["stats"]["unique_graphs"] - graphs)
    cells = {"switch s": max(times), "recompiles": recompiled,
             "notes": f"{verdict(max(times), 1.0, 's')}; worst of 3 switches (new LoRA, back, new strength); "
                      f"hot-swap slot: {'yes' if engine.manager.hotswap else 'no'}"}
    if ctx.plain_switch is not None:
        ctx.results.put("switch", "plain diffusers (delete + load + set_adapters)",
                        {"switch s": ctx.plain_switch, "recompiles": "—", "notes": "from the generate group"})
    return cells


def row_sheet(ctx: Context) -> dict:
    from lora_studio.services.sheet_prompts import SHEET_PROMPTS

    cfg = ctx.cfg
    engine = ctx.ours_engine()
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (cfg.size, cfg.size, 3), dtype=np.uint8))
    prompts = SHEET_PROMPTS[:cfg.sheet_images]
    requests = [EditRequest(image=reference, prompt=p.prompt, seed=1000 + p.slot, width=cfg.size, height=cfg.size,
                            steps=cfg.steps) for p in prompts]
    first = 0.0
    if not cfg.smoke:  # warm-up: compiles the Kontext shapes
        first, _ = timed(cfg, lambda: engine.edit_many(requests[:engine.edit_batch]))
    reset_peak(cfg)
    total, images = timed(cfg, lambda: engine.edit_many(requests))
    tflop = flux_tflop(transformer_config(not cfg.smoke), 2 * image_tokens(cfg.size), cfg.text_tokens) * cfg.steps
    return {"settings": engine.manager.speed.summary(), "images": len(images), "total s": total,
            "s/image": total / len(images), "TFLOP/s": tflop * len(images) / total, "peak GB": peak_gb(cfg),
            "notes": f"{engine.edit_batch} edits per call" + (f"; warm-up call {first:.1f} s" if first else "")
                     + "; TFLOP count includes the reference image's tokens"}


def train_rows(ctx: Context) -> None:
    modes = [m for m in MEMORY_MODES if m != "auto"]
    runs = [(mode, OFF) for mode in modes] + [("auto", ctx.speed())]
    if ctx.cfg.smoke:  # one mode proves the row runs; the memory tests cover every mode on the CPU
        runs = runs[:1]
    for mode, speed in runs:
        label = mode if speed is OFF else "auto, on the auto-speed base"
        made: list[ModelManager] = []  # made by the first row that runs: a skipped row builds nothing

        def manager(mode=mode, speed=speed, made=made) -> ModelManager:
            if not made:
                made.append(ModelManager(model=str(ctx.folder), device=ctx.cfg.device, memory_mode=mode, speed=speed))
            return made[0]

        for resolution in ctx.cfg.train_resolutions:
            ctx.row("train", f"{label} · {resolution}²", lambda: train_cells(ctx, manager(), mode, resolution))
        for one in made:
            one.unload()
        free(ctx.cfg)
    for mode in modes[len(runs):] if ctx.cfg.smoke else ():
        ctx.results.put("train", f"{mode} · {ctx.cfg.train_resolutions[0]}²", {"notes": "not run by --smoke"})


def ablation_variants(auto: SpeedSettings, cuda: bool = True) -> list[tuple[str, SpeedSettings, str | None]]:
    """(name, settings, attention backend): each auto setting off in turn, the cache on, and, on CUDA, cuDNN
    attention (not a speed setting yet: measured here first, to decide whether auto should pick it)."""
    variants = []
    if auto.quantize:
        variants.append((f"without {auto.quantize} base", replace(auto, quantize=None), None))
    if auto.compile:
        variants.append(("without compile (and hot-swap)", replace(auto, compile=False), None))
    if auto.fuse_qkv:
        variants.append(("without fused QKV", replace(auto, fuse_qkv=False), None))
    variants.append(("with first-block cache 0.05", replace(auto, first_block_cache=0.05), None))
    if cuda:
        variants.append(("with cuDNN attention", auto, "_native_cudnn"))
    return variants


def ablation_rows(ctx: Context) -> None:
    from lora_studio.engines.speed.settings import gpu_info, pick_device, resolve_speed

    auto = ctx.speed() if ctx.cfg.smoke else resolve_speed(SpeedRequest(), gpu_info(pick_device(ctx.cfg.device)))
    variants = ablation_variants(auto, cuda=ctx.cfg.device == "cuda")
    for name, speed, attention in variants[:1] if ctx.cfg.smoke else variants:
        def measure(speed=speed, attention=attention):
            engine = ctx.engine(replace(speed, reason=""))
            if attention:  # before the first forward, so the compiled blocks see it
                engine.manager.text_to_image().transformer.set_attention_backend(attention)
            try:
                cells = generation_cells(ctx, lambda: engine.generate(ctx.request()), speed.summary()
                                         + (f" + {attention} attention" if attention else ""))
                cells.pop("_image")
                return cells
            finally:
                engine.unload()
                free(ctx.cfg)
        ctx.row("ablations", name, measure)


def scaling_rows(ctx: Context) -> None:
    """One row per GPU count: the same loop in 1 … N worker processes (training/workers.py), each loading
    the random-weight folder itself; on --smoke one CPU worker proves the row runs."""
    from train_scaling import in_workers

    cfg = ctx.cfg
    cuda = cfg.device == "cuda"
    counts = range(1, torch.cuda.device_count() + 1) if cuda else [1]
    resolution = cfg.train_resolutions[0]
    data = make_dataset(cfg.work / "data" / f"scaling-{resolution}", resolution, count=8)
    for n in counts:
        def measure(n=n):
            row = in_workers(cfg.work / "scaling" / str(n), data, cfg.train_steps + 1, n, model=str(ctx.folder),
                             device="cuda" if cuda else "cpu", gpu_ids=tuple(range(n)) if cuda else (),
                             resolution=resolution)
            images = row["steps/s"] * n if row["steps/s"] else None
            first = ctx.results.rows.get(f"scaling/1 {'GPU' if cuda else 'CPU process'}", {}).get("images/s")
            return {"processes": n, "steps/s": row["steps/s"], "images/s": images, "start-up s": row["start s"],
                    "vs 1 process": f"{images / first:.2f}x" if images and first else "",
                    "notes": f"{resolution}², memory mode auto, batch {n}"}
        ctx.row("scaling", f"{n} {'GPU' if cuda else 'CPU process'}{'s' if n > 1 else ''}", measure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, wide Flux, tiny sizes: proves the suite runs")
    parser.add_argument("--out", type=Path, help="where the table goes (default: the section in bench/README.md; "
                                                 "required with --smoke)")
    parser.add_argument("--only", help=f"comma-separated groups: {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--device", help="cuda (default) or cpu (--smoke default)")
    parser.add_argument("--work", help="folder for the random weights, LoRAs and training files (kept for reuse)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="the whole command's time: rows run most telling first, and a row whose estimate does "
                             "not fit what is left is not started (bench/gpu_budget.py)")
    args = parser.parse_args(argv)
    if args.smoke and not args.out:
        parser.error("--smoke needs --out PATH (the smoke table never goes into bench/README.md)")
    groups = [g.strip() for g in args.only.split(",")] if args.only else list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    cfg = Config.from_args(args)
    if cfg.smoke:  # the trainer's text length too, so the CPU gets through in a few minutes
        from lora_studio.training import dataset

        dataset.MAX_SEQUENCE_LENGTH = cfg.text_tokens
    if cfg.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run it on a GPU machine, or try `--smoke --out table.md` on the CPU")
    torch.set_grad_enabled(False)
    results = Results.open(cfg.results, fresh=not args.only)
    results.start_run(cfg)
    ctx = Context(cfg, results, budget=Budget(args.budget))
    gpu_klein.run(ctx, groups)  # the default local model first: its rows are the most telling
    if "generate" in groups:
        ctx.row("generate", "plain diffusers", lambda: row_plain(ctx), kind="generate:plain")
        ctx.row("generate", "ours (auto speed)", lambda: row_ours(ctx), kind="generate:ours")
    if "switch" in groups:
        ctx.row("switch", "ours (auto speed)", lambda: row_switch(ctx))
    if "sheet" in groups:
        ctx.row("sheet", "ours (auto speed)", lambda: row_sheet(ctx))
    ctx.drop_ours()
    if "train" in groups:
        torch.set_grad_enabled(True)
        train_rows(ctx)
        torch.set_grad_enabled(False)
    if "ablations" in groups:
        ablation_rows(ctx)
    if "scaling" in groups:
        torch.set_grad_enabled(True)
        scaling_rows(ctx)
    gpu_klein.run_last(ctx, groups)
    results.save(cfg.out, readme=not cfg.smoke)
    print(results.markdown())
    if ctx.budget.skipped:
        print(f"\nNot started within the {args.budget:.0f} s budget: {', '.join(ctx.budget.skipped)}")
    print(f"\nTable written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
