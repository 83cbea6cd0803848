"""What every row of bench/gpu_suite.py uses: the results table, timing and GPU memory, random LoRAs,
synthetic data sets and one training row through the real trainer (any family's model manager)."""
from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lora_studio.engines import memory
from lora_studio.engines.base import TrainRequest
from lora_studio.engines.local.model_manager import ModelManager
from lora_studio.errors import is_out_of_memory
from train_overhead import TimingReporter  # progress time stamps: one per training step

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
START, END = "<!-- gpu-suite:start -->", "<!-- gpu-suite:end -->"
GROUPS = ("klein_generate", "klein_train", "klein_sheet", "generate", "switch", "sheet", "train", "ablations",
          "scaling", "klein9_train")  # in the order they run: most telling first (gpu_budget.py)
PROMPT = "photo of mila_v1, portrait, soft window light"
RANK = 16
GOALS = {
    "generate": "≤ 3.0 s/image with a LoRA (H100); plain diffusers ≈ 6.7–7.9 s",
    "switch": "< 1 s, no recompile",
    "train_8bit": "512² ≤ 24 GB with an 8-bit base",
    "train_lightest": "512² ≤ 8 GB in the lightest mode",
}


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
        from gpu_klein import TABLES as KLEIN_TABLES

        tables = [*KLEIN_TABLES,
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


def make_dataset(folder: Path, resolution: int, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(resolution)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"ohwx, synthetic picture {i}")
    return folder


FLUX1_TRAIN_GOALS = {"8bit": 24.0, memory.LADDER[-1]: 8.0}  # GB at 512²


def train_cells(ctx: Context, manager: ModelManager, mode: str, resolution: int,
                goals: dict[str, float] | None = None) -> dict:
    """A few training steps of `manager`'s model in `mode` at `resolution` through the real trainer: the median
    s/step after the first, the peak GB (the loaded base included) and the plan the trainer logged; `goals`
    (GB at 512² per mode, FLUX.1's by default) are judged in the notes."""
    from lora_studio.training.trainer import train_on_manager

    cfg = ctx.cfg
    work = cfg.work / "train" / Path(manager.model_id).name / f"{mode}-{resolution}"
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
    goal = (FLUX1_TRAIN_GOALS if goals is None else goals).get(mode) if resolution == 512 else None
    notes = [verdict(peak, goal, "GB") if goal else "", plan[:200], manager.memory_note]
    return {"s/step": statistics.median(steps) if steps else None, "peak GB": peak,
            "notes": "; ".join(n for n in notes if n)}


