"""Generation with LoRAs, and the task table a content pipeline calls by name.

A task (`"mila"`) maps to LoRAs, strengths and a prompt prefix in a JSON settings file, so a script
asks for `generate(task="mila", prompt="at the beach")` and the tuning lives in one place.

Size, steps and guidance come from the model family (`family_defaults`: the sizes it was trained at,
its steps and guidance) within what the engine serves (limits.EngineLimits, the memory plan's bound):
`GenerateService.form()` is that pair, which the form shows, the API defaults to and the door checks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..engines.base import Defaults, Engine, GenerateRequest, defaults_of, family_of, replicate_lora_scale
from ..images import save_png
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store, atomic_write_json
from . import limits
from .costs import CostService
from .job_params import GenerateParams
from .library import LibraryService
from .strength_analysis import parse_strengths

JOB_KIND = "generate"
MAX_SIDE = 2048  # the most any engine serves; each engine's own bound is in limits.EngineLimits
MAX_LORAS = 4
FAMILY = "flux1"  # the family of an engine that does not say (Replicate's trainer is FLUX.1 only)


@dataclass(frozen=True)
class FamilyDefaults:
    """How a model family draws best: the sizes it was trained at (the first is the default), the side
    multiple its latents need, and its default steps and guidance."""

    family: str
    sizes: tuple[tuple[int, int], ...]
    multiple: int
    min_side: int
    steps: int
    guidance: float
    max_guidance: float


# FLUX.1 [dev]: trained around 1 MP in many aspect ratios (sides a multiple of 16: 8x VAE, 2x2 patches),
# 28 steps and distilled guidance 3.5 as its model card and diffusers' example use. Below 64 px there is
# nothing left to draw (and small random-weight copies are tested on the local engine at 64 px).
_FAMILIES = {
    "flux1": FamilyDefaults("flux1", sizes=((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
                                            (1344, 768), (768, 1344), (512, 512)),
                            multiple=16, min_side=64, steps=28, guidance=3.5, max_guidance=10.0),
    # FLUX.2 [klein]: the same ~1 MP buckets on 16-px sides (8x VAE, 2x2 patches); steps and guidance here
    # are the base checkpoint's card (50, CFG 4); a distilled checkpoint's 4 steps come from the engine.
    "flux2-klein": FamilyDefaults("flux2-klein", sizes=((1024, 1024), (1152, 896), (896, 1152), (1216, 832),
                                                        (832, 1216), (1344, 768), (768, 1344), (512, 512)),
                                  multiple=16, min_side=64, steps=50, guidance=4.0, max_guidance=10.0),
}


def family_defaults(family: str = FAMILY) -> FamilyDefaults:
    """The one place a family's generation defaults live; a new family adds its entry here."""
    try:
        return _FAMILIES[family]
    except KeyError:
        raise UserError(f"No generation defaults for the model family {family!r}.") from None


@dataclass(frozen=True)
class GenerateForm:
    """What the Generate form offers on this engine: the family's sizes and defaults within the
    engine's bound (a smaller engine, the tiny one, gets the family's shapes at its own scale)."""

    sizes: tuple[tuple[int, int], ...]
    width: int
    height: int
    min_side: int
    max_side: int
    multiple: int
    max_pixels: int
    steps: int
    max_steps: int
    guidance: float
    max_guidance: float
    drawn_steps: int | None = None  # the engine runs at most this many, whatever is asked (tiny)

    def size_choices(self) -> list[tuple[str, str]]:
        return [(f"{w} × {h}", f"{w}x{h}") for w, h in self.sizes]

    def size(self, value) -> tuple[int, int]:
        """One of `size_choices` ("1024x1024") as (width, height)."""
        text = limits.text(value, "The size", 20)
        for w, h in self.sizes:
            if text == f"{w}x{h}":
                return w, h
        raise UserError(f"Pick a size from the list ({', '.join(label for label, _ in self.size_choices())}).")


def fit_form(defaults: FamilyDefaults, lim: limits.EngineLimits, image_size: int) -> GenerateForm:
    """The family's form on an engine whose default side is `image_size` (tiny: 64 px) and whose
    bounds are `lim`: each size scaled to that default, kept on the multiple, dropped where too big."""
    multiple = max(defaults.multiple, lim.side_multiple)
    scale = image_size / defaults.sizes[0][0]

    def side(value: float) -> int:
        return max(multiple, int(value * scale) // multiple * multiple)

    sizes = tuple(dict.fromkeys((side(w), side(h)) for w, h in defaults.sizes))
    sizes = tuple((w, h) for w, h in sizes if max(w, h) <= lim.max_side and w * h <= lim.pixel_bound)
    width, height = sizes[0] if sizes else (image_size, image_size)
    return GenerateForm(sizes=sizes, width=width, height=height,
                        min_side=min(side(defaults.min_side), width, height), max_side=lim.max_side,
                        multiple=multiple, max_pixels=lim.pixel_bound,
                        steps=min(defaults.steps, lim.drawn_steps or defaults.steps),
                        max_steps=lim.max_inference_steps, guidance=defaults.guidance,
                        max_guidance=defaults.max_guidance, drawn_steps=lim.drawn_steps)


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
    width: int | None = None  # None: the family's default (GenerateService.form)
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
                 engine_limits: limits.EngineLimits | None = None,
                 drawing: Callable[[], tuple[str, Defaults]] | None = None) -> None:
        self.store, self.jobs, self.library = store, jobs, library
        self.costs = costs or CostService(store.root, paid=False)
        self._engine = engine
        self.image_size = image_size
        self.limits = engine_limits or limits.LOCAL
        self._drawing = drawing  # the family key and defaults without building the engine (Studio's)
        self.tasks_file = tasks_file or store.root / "tasks.json"
        jobs.register(JOB_KIND, self._run, params=GenerateParams)

    def form(self) -> GenerateForm:
        """Sizes, steps and guidance this engine offers for its family, with their defaults: steps and
        guidance are the engine's checkpoint's (a distilled Klein draws in 4 steps without CFG)."""
        if self._drawing is not None:
            key, drawn = self._drawing()
        else:
            engine = self._engine()
            key, drawn = family_of(engine).key, defaults_of(engine)
        defaults = replace(family_defaults(key), steps=drawn.steps, guidance=drawn.guidance)
        return fit_form(defaults, self.limits, self.image_size)

    def tasks(self) -> dict[str, Task]:
        return load_tasks(self.tasks_file)

    def save_task(self, task: Task) -> None:
        raw = {"tasks": {}}
        if self.tasks_file.exists():
            raw = json.loads(self.tasks_file.read_text(encoding="utf-8"))
            raw.setdefault("tasks", {})
        raw["tasks"][task.name] = {k: v for k, v in task.__dict__.items() if k != "name" and v not in (None, "")}
        atomic_write_json(self.tasks_file, raw)

    def resolve(self, options: GenerateOptions) -> GenerateParams:
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
        return self.check(GenerateParams(prompt=prompt, loras=tuple(weights), seed=seed, width=width, height=height,
                                         steps=options.steps, guidance=options.guidance, go_fast=options.go_fast))

    def check(self, params: GenerateParams) -> GenerateParams:
        """Size, steps, seed and guidance within what this engine serves (also for stored jobs); a value
        left out (None) is the family's default. The values may be anything a caller sent; the result
        holds them typed."""
        form = self.form()

        def given(value, default):
            return default if value is None else value

        width, height = limits.image_size(given(params.width, form.width), given(params.height, form.height),
                                          self.limits, form.min_side, form.multiple, (form.width, form.height))
        return replace(params, prompt=limits.text(params.prompt, "The prompt", limits.MAX_PROMPT + 400, required=True),
                       seed=limits.seed(params.seed), width=width, height=height,
                       steps=limits.whole_number(given(params.steps, form.steps), "Steps", 1, form.max_steps,
                                                 form.steps),
                       guidance=limits.number(given(params.guidance, form.guidance), "Guidance", 0.0,
                                              form.max_guidance, form.guidance),
                       go_fast=limits.flag(params.go_fast, "go_fast"),
                       loras=tuple((str(lid), parse_strengths([w])[0]) for lid, w in params.loras or ())[:MAX_LORAS])

    def start(self, options: GenerateOptions) -> JobView:
        return self.jobs.submit(JOB_KIND, self.resolve(options), title="Generate")

    def _run(self, params: GenerateParams, reporter: JobReporter) -> dict:
        params = self.check(params)
        engine = self._engine()
        loras = tuple(self.library.weight(lid, w) for lid, w in params.loras)
        go_fast = params.go_fast
        meter = self.costs.meter(None)
        image = meter.call("lora" if loras else "plain", engine.generate, GenerateRequest(
            prompt=params.prompt, seed=params.seed, width=params.width, height=params.height,
            steps=params.steps, guidance=params.guidance, loras=loras, go_fast=go_fast))
        path = save_png(image, self.store.public_dir("jobs", reporter.job_id) / "image.png")
        result = {"image": str(path), "go_fast": go_fast}
        if meter.paid:  # what Replicate applied, so a strength read off a result means the same at home
            result["spending"] = meter.summary()
            result["applied_strengths"] = [replicate_lora_scale(w, go_fast) for _, w in params.loras]
        return result
