"""The GPU table in one command: FLUX.1-dev at full size with random weights, measured and written to bench/README.md.

    python bench/gpu_suite.py                          # on a CUDA machine: every row, README section rewritten
    python bench/gpu_suite.py --only sheet,train       # some groups; rows from earlier runs are kept
    python bench/gpu_suite.py --smoke --out table.md   # CPU, wide Flux (real widths, one block each), tiny sizes

It builds the whole FLUX.1-dev architecture (19 double + 38 single blocks, T5-XXL, the real VAE) with
random weights, straight onto the GPU in bf16, and saves it once as a diffusers folder, so every row
loads through the same code path as real weights (quantized memory modes included). FLUX.1-Kontext-dev
has the same architecture, so the sheet runs FluxKontextPipeline with those weights as its own
transformer (a second folder naming FluxKontextPipeline, swapped in under the same encoders). Speed and memory do
not depend on the values. Rows, grouped for --only:

    generate   text-to-image 1024², 28 steps, a rank-16 LoRA loaded: plain diffusers vs our engine (auto speed)
    switch     LoRA switch time on our engine (hot-swap), and whether the next image recompiled
    sheet      the 30-image Kontext character sheet on our engine
    train      training steps at 512² and 1024², rank 16, in every memory mode, through the real trainer
    ablations  our engine with each auto speed setting turned off in turn, and with the first-block cache
    scaling    training in Accelerate worker processes, one row per GPU count (1 … every GPU), one image
               per GPU per step: steps/s, images/s against one GPU, and the start-up cost apart

One failing row never stops the run: its error (or "out of memory") is written in its cell. The table
is rewritten after every row, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lora_studio.config import MEMORY_MODES, SpeedRequest  # noqa: E402
from lora_studio.engines import memory  # noqa: E402
from lora_studio.errors import is_out_of_memory  # noqa: E402
from lora_studio.engines.base import EditRequest, GenerateRequest, LoraWeight, TrainRequest  # noqa: E402
from lora_studio.engines.local.engine import LocalEngine  # noqa: E402
from lora_studio.engines.local.model_manager import ModelManager  # noqa: E402
from lora_studio.engines.speed.settings import OFF, SpeedSettings  # noqa: E402
from lora_studio.engines.builtin.wide import build_flux, transformer_config  # noqa: E402
from train_overhead import TimingReporter  # noqa: E402 - progress time stamps: one per training step

README = ROOT / "bench" / "README.md"
START, END = "<!-- gpu-suite:start -->", "<!-- gpu-suite:end -->"
GROUPS = ("generate", "switch", "sheet", "train", "ablations", "scaling")
PROMPT = "photo of mila_v1, portrait, soft window light"
RANK = 16
GOALS = {
    "generate": "≤ 3.0 s/image with a LoRA (H100); plain diffusers ≈ 6.7–7.9 s",
    "switch": "< 1 s, no recompile",
    "train_8bit": "512² ≤ 24 GB with an 8-bit base",
    "train_lightest": "512² ≤ 8 GB in the lightest mode",
}


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


# ---------------------------------------------------------------- results and the markdown table


@dataclass
class Results:
    path: Path
    runs: list[dict] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)  # "table/row" -> cells

    @classmethod
    def open(cls, path: Path, fresh: bool) -> "Results":
        if fresh or not path.is_file():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, data.get("runs", []), data.get("rows", {}))

    def start_run(self, cfg: Config) -> None:
        device = torch.cuda.get_device_name(0) if cfg.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
        command = "python bench/gpu_suite.py " + " ".join(sys.argv[1:])
        self.runs.append({"device": device, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                          "command": command.strip(), "torch": torch.__version__})

    def put(self, table: str, row: str, cells: dict) -> None:
        self.rows[f"{table}/{row}"] = {**cells, "run": len(self.runs)}

    def save(self, out: Path, readme: bool) -> None:
        self.path.write_text(json.dumps({"runs": self.runs, "rows": self.rows}, indent=1, default=str))
        section = f"{START}\n{self.markdown()}\n{END}"
        if not readme:
            out.write_text(section + "\n")
            return
        text = out.read_text() if out.is_file() else ""
        if START in text and END in text:
            text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        out.write_text(text)

    def markdown(self) -> str:
        lines = ["Measured by `bench/gpu_suite.py` (rewritten by it; do not edit by hand).", ""]
        for i, run in enumerate(self.runs, 1):
            lines.append(f"- run {i}: {run['device']} · {run['date']} · torch {run['torch']} · `{run['command']}`")
        tables = [
            ("generate", "Text-to-image with a rank-16 LoRA loaded", GOALS["generate"],
             ["engine", "settings", "s/image", "TFLOP/s", "peak GB", "vs plain image", "notes"]),
            ("switch", "LoRA switch", GOALS["switch"], ["engine", "switch s", "recompiles", "notes"]),
            ("sheet", "Kontext character sheet", "", ["engine", "settings", "images", "total s", "s/image",
                                                       "TFLOP/s", "peak GB", "notes"]),
            ("train", "Training, rank 16 (s/step after one warm-up step; peak GB includes the loaded base)",
             f"{GOALS['train_8bit']}; {GOALS['train_lightest']}", ["memory mode · resolution", "s/step",
                                                                   "peak GB", "notes"]),
            ("ablations", "Our engine, one setting changed (same rows as text-to-image)", "",
             ["variant", "settings", "s/image", "TFLOP/s", "peak GB", "vs plain image", "notes"]),
            ("scaling", "Training in worker processes, data-parallel (rank 16, one image per process per step)",
             "", ["processes", "steps/s", "images/s", "vs 1 process", "start-up s", "notes"]),
        ]
        for key, title, goal, columns in tables:
            rows = [(k.split("/", 1)[1], v) for k, v in self.rows.items() if k.startswith(key + "/")]
            if not rows:
                continue
            lines += ["", f"### {title}" + (f" — goal: {goal}" if goal else ""), "",
                      "| " + " | ".join(columns + ["run"]) + " |", "|" + "---|" * (len(columns) + 1)]
            for name, cells in rows:
                values = [name] + [_cell(cells.get(c)) for c in columns[1:]] + [str(cells.get("run", ""))]
                lines.append("| " + " | ".join(values) + " |")
        return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value).replace("|", "/").replace("\n", " ")


def verdict(value: float | None, limit: float, unit: str) -> str:
    if value is None:
        return ""
    return f"goal ≤ {limit:g} {unit}: {'met' if value <= limit else 'missed'}"


def error_cell(exc: BaseException) -> str:
    if is_out_of_memory(exc):
        return "out of memory"
    return f"error: {type(exc).__name__}: {str(exc)[:240]}"


# ---------------------------------------------------------------- measuring


def sync(cfg: Config) -> None:
    if cfg.device == "cuda":
        torch.cuda.synchronize()


def reset_peak(cfg: Config) -> None:
    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gb(cfg: Config) -> float | None:
    return torch.cuda.max_memory_allocated() / 1024**3 if cfg.device == "cuda" else None


def free(cfg: Config) -> None:
    gc.collect()
    if cfg.device == "cuda":
        torch.cuda.empty_cache()


def timed(cfg: Config, call) -> tuple[float, object]:
    sync(cfg)
    tick = time.perf_counter()
    value = call()
    sync(cfg)
    return time.perf_counter() - tick, value


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def diff_text(image, reference) -> str | None:
    if reference is None:
        return None
    delta = np.abs(pixels(image) - reference)
    return "identical" if not delta.any() else f"max {delta.max()}, mean {delta.mean():.1f} levels"


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


def random_lora(transformer, path: Path, seed: int, rank: int = RANK, scale: float = 0.01) -> Path:
    """A random rank-`rank` LoRA on the layers our trainer targets (attention + MLP of every block), written as
    a diffusers file with its peft metadata. The transformer is only read (its layer shapes)."""
    from diffusers import FluxPipeline
    from peft import LoraConfig

    from lora_studio.engines.lora.targets import target_modules

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in target_modules(transformer, train_mlp=True):
        layer = transformer.get_submodule(name)
        state[f"{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=generator) * scale
        state[f"{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=generator) * scale
    metadata = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted({k.rsplit(".", 3)[0] for k in state}))
    path.parent.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(path.parent, transformer_lora_layers=state, weight_name=path.name,
                                   transformer_lora_adapter_metadata=metadata.to_dict())
    return path


@dataclass
class Context:
    cfg: Config
    results: Results
    folder: Path
    loras: dict[str, Path]
    plain_image: np.ndarray | None = None
    plain_switch: float | None = None
    ours: LocalEngine | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.cfg.device == "cpu" else torch.bfloat16

    def speed(self) -> SpeedSettings | SpeedRequest:
        # Smoke: the CPU's auto is "off"; the CPU-runnable settings that change the model (fused QKV) and the
        # sheet (two edits per call) are on instead, so their code paths run.
        return replace(OFF, fuse_qkv=True, batch_edits=2, reason="Smoke run: fused QKV, two edits per Kontext call.") \
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

    def row(self, table: str, name: str, measure) -> None:
        """Run one row; whatever it raises goes into its cells, and the table is saved either way."""
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


def make_dataset(folder: Path, resolution: int, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(resolution)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"ohwx, synthetic picture {i}")
    return folder


def train_cells(ctx: Context, manager: ModelManager, mode: str, resolution: int) -> dict:
    from lora_studio.training.trainer import train_on_manager

    cfg = ctx.cfg
    work = cfg.work / "train" / f"{mode}-{resolution}"
    request = TrainRequest(dataset_dir=make_dataset(cfg.work / "data" / str(resolution), resolution),
                           output_dir=work / "out", work_dir=work / "work", trigger="ohwx", steps=cfg.train_steps,
                           rank=RANK, resolution=resolution, checkpoint_every=0, sample_every=0,
                           memory_mode=mode, resume=False)
    reporter = TimingReporter()
    reset_peak(cfg)
    train_on_manager(manager, request, reporter)
    stamps = reporter.stamps[:cfg.train_steps]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    plan = next((line for line in reporter.logs if line.startswith("Memory mode")), "")
    peak = peak_gb(cfg)
    goal = {"8bit": 24.0, memory.LADDER[-1]: 8.0}.get(mode) if resolution == 512 else None
    notes = [verdict(peak, goal, "GB") if goal else "", plan[:200], manager.memory_note]
    return {"s/step": statistics.median(steps) if steps else None, "peak GB": peak,
            "notes": "; ".join(n for n in notes if n)}


def train_rows(ctx: Context) -> None:
    modes = [m for m in MEMORY_MODES if m != "auto"]
    runs = [(mode, OFF) for mode in modes] + [("auto", ctx.speed())]
    if ctx.cfg.smoke:  # one mode proves the row runs; the memory tests cover every mode on the CPU
        runs = runs[:1]
    for mode, speed in runs:
        label = mode if speed is OFF else "auto, on the auto-speed base"
        manager = ModelManager(model=str(ctx.folder), device=ctx.cfg.device, memory_mode=mode, speed=speed)
        for resolution in ctx.cfg.train_resolutions:
            ctx.row("train", f"{label} · {resolution}²", lambda: train_cells(ctx, manager, mode, resolution))
        manager.unload()
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
    auto = ctx.ours_engine().manager.speed
    ctx.drop_ours()
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
    args = parser.parse_args(argv)
    if args.smoke and not args.out:
        parser.error("--smoke needs --out PATH (the smoke table never goes into bench/README.md)")
    groups = [g.strip() for g in args.only.split(",")] if args.only else list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    cfg = Config.from_args(args)
    if cfg.smoke:  # the trainer's T5 length too, so the CPU gets through in a minute or two
        from lora_studio.training import dataset

        dataset.MAX_SEQUENCE_LENGTH = cfg.text_tokens
    if cfg.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run it on a GPU machine, or try `--smoke --out table.md` on the CPU")
    torch.set_grad_enabled(False)
    results = Results.open(cfg.results, fresh=not args.only)
    results.start_run(cfg)
    folder = build_weights(cfg)
    loras = {"a": make_lora(folder, cfg.work / "loras" / "a.safetensors", seed=1),
             "b": make_lora(folder, cfg.work / "loras" / "b.safetensors", seed=2)}
    ctx = Context(cfg, results, folder, loras)
    if "generate" in groups:
        ctx.row("generate", "plain diffusers", lambda: row_plain(ctx))
        ctx.row("generate", "ours (auto speed)", lambda: row_ours(ctx))
    if "switch" in groups:
        ctx.row("switch", "ours (auto speed)", lambda: row_switch(ctx))
    if "sheet" in groups:
        ctx.row("sheet", "ours (auto speed)", lambda: row_sheet(ctx))
    if "ablations" in groups:
        ablation_rows(ctx)
    ctx.drop_ours()
    if "train" in groups:
        torch.set_grad_enabled(True)
        train_rows(ctx)
    if "scaling" in groups:
        torch.set_grad_enabled(True)
        scaling_rows(ctx)
    results.save(cfg.out, readme=not cfg.smoke)
    print(results.markdown())
    print(f"\nTable written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
