"""Generation with LoRAs, and the task table a content pipeline calls by name.

A task (`"mila"`) maps to LoRAs, strengths and a prompt prefix in a JSON settings file, so a script
asks for `generate(task="mila", prompt="at the beach")` and the tuning lives in one place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..engines.base import Engine, GenerateRequest, defaults_of, family_of, replicate_lora_scale
from ..images import save_png
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store, atomic_write_json
from . import limits
from .costs import CostService
from .library import LibraryService
from .strength_analysis import parse_strengths

JOB_KIND = "generate"
MAX_SIDE = 2048  # the most any engine serves; each engine's own bound is in limits.EngineLimits
MAX_LORAS = 4


@dataclass(frozen=True)
class Task:
    name: str
    loras: dict[str, float]
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class GenerateOptions:
    prompt: str
    loras: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    width: int | None = None
    height: int | None = None
    steps: int | None = None  # None: the engine family's (FLUX.1 28, Klein distilled 4, Klein base 50)
    guidance: float | None = None  # None: the engine family's (FLUX.1 3.5; ignored by a distilled Klein)
    task: str | None = None
    go_fast: bool = False  # Replicate's fp8 mode; it multiplies LoRA strengths by 1.5 there


def parse_lora_weights(text: str) -> dict[str, float]:
    """'mila:0.9, film-style:0.5' → {'mila': 0.9, 'film-style': 0.5}."""
    weights: dict[str, float] = {}
    parts = [p for p in limits.text(text, "The LoRA list").split(",") if p.strip()]
    if len(parts) > MAX_LORAS:
        raise UserError(f"{len(parts)} LoRAs given; use at most {MAX_LORAS} at once.")
    for part in parts:
        if not part.strip():
            continue
        name, sep, value = part.strip().rpartition(":")
        if not sep or not name.strip():
            raise UserError(f"Write LoRAs as name:weight, e.g. mila:0.9 (got {part.strip()!r}).")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"Weight {value!r} for {name.strip()!r} is not a number.") from None
    return weights


def load_tasks(path: Path | None) -> dict[str, Task]:
    if path is None or not Path(path).exists():
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"The task file {Path(path).name} is not valid JSON: {exc}") from None
    tasks = {}
    for name, spec in raw.get("tasks", raw).items():
        loras = spec.get("loras") or ({spec["lora"]: spec.get("strength", 1.0)} if spec.get("lora") else {})
        tasks[name] = Task(name=name, loras={k: float(v) for k, v in loras.items()},
                           prompt_prefix=spec.get("prompt_prefix", ""), prompt_suffix=spec.get("prompt_suffix", ""),
                           seed=spec.get("seed"), width=spec.get("width"), height=spec.get("height"))
    return tasks


class GenerateService:
    def __init__(self, store: Store, jobs: JobQueue, library: LibraryService, engine: Callable[[], Engine],
                 image_size: int, tasks_file: Path | None, costs: CostService | None = None,
                 engine_limits: limits.EngineLimits | None = None) -> None:
        self.store, self.jobs, self.library = store, jobs, library
        self.costs = costs or CostService(store.root, paid=False)
        self._engine = engine
        self.image_size = image_size
        self.limits = engine_limits or limits.LOCAL
        self.tasks_file = tasks_file or store.root / "tasks.json"
        jobs.register(JOB_KIND, self._run)

    def tasks(self) -> dict[str, Task]:
        return load_tasks(self.tasks_file)

    def save_task(self, task: Task) -> None:
        raw = {"tasks": {}}
        if self.tasks_file.exists():
            raw = json.loads(self.tasks_file.read_text(encoding="utf-8"))
            raw.setdefault("tasks", {})
        raw["tasks"][task.name] = {k: v for k, v in task.__dict__.items() if k != "name" and v not in (None, "")}
        atomic_write_json(self.tasks_file, raw)

    def resolve(self, options: GenerateOptions) -> dict:
        prompt = limits.text(options.prompt, "The prompt", limits.MAX_PROMPT)
        loras = dict(options.loras)
        seed, width, height = options.seed, options.width, options.height
        if options.task:
            task_name = limits.text(options.task, "The task", limits.MAX_NAME)
            task = self.tasks().get(task_name)
            if task is None:
                raise UserError(f"No task named {task_name!r} in {self.tasks_file.name}.")
            prompt = " ".join(p for p in (task.prompt_prefix, prompt, task.prompt_suffix) if p).strip()
            loras = {**task.loras, **loras}
            seed = task.seed if task.seed is not None and not options.seed else seed
            width, height = width or task.width, height or task.height
        if not prompt:
            raise UserError("Write a prompt.")
        if len(loras) > MAX_LORAS:
            raise UserError(f"{len(loras)} LoRAs given; use at most {MAX_LORAS} at once.")
        weights = []
        engine = self._engine()
        for name, weight in loras.items():
            weight = parse_strengths([weight])[0]
            record = self.library.resolve(name)
            self.library.check_family(record, family_of(engine))
            weights.append((record["id"], weight))
        defaults = defaults_of(engine)
        return self.check(dict(prompt=prompt, loras=weights, seed=seed, width=width or self.image_size,
                               height=height or self.image_size,
                               steps=defaults.steps if options.steps is None else options.steps,
                               guidance=defaults.guidance if options.guidance is None else options.guidance,
                               go_fast=options.go_fast))

    def check(self, params: dict) -> dict:
        """Size, steps, seed and guidance within what this engine serves (also for stored jobs)."""
        lim = self.limits
        side = f"a multiple of {lim.side_multiple} from {lim.side_multiple} to {lim.max_side}"
        sizes = {}
        for key in ("width", "height"):
            value = limits.whole_number(params.get(key), key.capitalize(), lim.side_multiple, lim.max_side,
                                        self.image_size)
            if value % lim.side_multiple:
                raise UserError(f"{key.capitalize()} {value} does not fit; give {side}.")
            sizes[key] = value
        return dict(params, prompt=limits.text(params.get("prompt"), "The prompt", limits.MAX_PROMPT + 400,
                                               required=True),
                    seed=limits.seed(params.get("seed", 0)), **sizes,
                    steps=limits.whole_number(params.get("steps", 28), "Steps", 1, lim.max_inference_steps, 28),
                    guidance=limits.number(params.get("guidance", 3.5), "Guidance", 0.0, 30.0, 3.5),
                    go_fast=limits.flag(params.get("go_fast", False), "go_fast"),
                    loras=[(str(lid), parse_strengths([w])[0]) for lid, w in params.get("loras") or []][:MAX_LORAS])

    def start(self, options: GenerateOptions) -> JobView:
        return self.jobs.submit(JOB_KIND, self.resolve(options), title="Generate")

    def _run(self, params: dict, reporter: JobReporter) -> dict:
        params = self.check(params)
        engine = self._engine()
        loras = tuple(self.library.weight(lid, w) for lid, w in params["loras"])
        go_fast = bool(params.get("go_fast", False))
        meter = self.costs.meter(None)
        image = meter.call("lora" if loras else "plain", engine.generate, GenerateRequest(
            prompt=params["prompt"], seed=params["seed"], width=params["width"], height=params["height"],
            steps=params["steps"], guidance=params["guidance"], loras=loras, go_fast=go_fast))
        path = save_png(image, self.store.public_dir("jobs", reporter.job_id) / "image.png")
        result = {"image": str(path), "go_fast": go_fast}
        if meter.paid:  # what Replicate applied, so a strength read off a result means the same at home
            result["spending"] = meter.summary()
            result["applied_strengths"] = [replicate_lora_scale(w, go_fast) for _, w in params["loras"]]
        return result
