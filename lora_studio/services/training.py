"""Training jobs: dataset → LoRA, on whichever engine is configured, registered when done.

A job's work folder is `jobs/<id>/`, so resuming the same job finds its checkpoints and caches; its
samples go to the served `public/jobs/<id>/samples/`. Every number is checked against what the
engine can serve when the job is submitted, and again when it starts (a job queued by an older
version may hold anything).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from ..engines.base import Engine, EngineError, TrainRequest
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from ..training.presets import DEFAULT_PRESET, PRESETS, TrainingPreset, validate_hyperparameters
from . import limits
from .characters import Characters
from .library import LibraryService
from .selection import validate_trigger

JOB_KIND = "train"


@dataclass(frozen=True)
class TrainOptions:
    name: str
    trigger: str
    preset: str = "Standard"
    steps: int | None = None
    rank: int | None = None
    learning_rate: float | None = None
    resolution: int | None = None
    memory_mode: str = "auto"
    checkpoint_every: int | None = None
    sample_every: int | None = None
    seed: int = 0


class TrainingService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters, library: LibraryService,
                 engine: Callable[[], Engine], tiny: bool, image_size: int,
                 engine_limits: limits.EngineLimits | None = None) -> None:
        self.store, self.jobs, self.characters, self.library = store, jobs, characters, library
        self._engine = engine
        self.tiny = tiny
        self.image_size = image_size
        self.limits = engine_limits or limits.limits_for("tiny" if tiny else "local")
        jobs.register(JOB_KIND, self._run)

    default_preset = DEFAULT_PRESET

    def presets(self) -> dict[str, TrainingPreset]:
        return dict(PRESETS)

    def preset_fields(self, name: str) -> dict:
        """A preset's editable numbers as the form shows them (the tiny engine trains at its own size)."""
        if name not in PRESETS:
            raise UserError(f"Unknown preset {name!r}; choose {', '.join(PRESETS)}.")
        preset = PRESETS[name]
        return dict(steps=preset.steps, rank=preset.rank, learning_rate=preset.learning_rate,
                    resolution=self.image_size if self.tiny else preset.resolution,
                    description=preset.description)

    def resolve(self, options: TrainOptions) -> dict:
        """Preset values overridden by what the user typed, validated, as TrainRequest fields."""
        preset_name = limits.text(options.preset, "The preset", 40) or DEFAULT_PRESET
        if preset_name not in PRESETS:
            raise UserError(f"Unknown preset {preset_name[:40]!r}; choose {', '.join(PRESETS)}.")
        preset = PRESETS[preset_name]
        values = dict(steps=preset.steps, rank=preset.rank, learning_rate=preset.learning_rate,
                      resolution=preset.resolution, alpha=preset.alpha, train_mlp=preset.train_mlp)
        for key in ("steps", "rank", "learning_rate", "resolution"):
            if getattr(options, key) is not None:
                values[key] = getattr(options, key)
        if self.tiny and options.resolution is None:
            values["resolution"] = self.image_size
        values.update(self.check_numbers(values))
        every = max(1, values["steps"] // 4)
        values["checkpoint_every"] = limits.whole_number(options.checkpoint_every or every, "Checkpoint every", 1,
                                                         values["steps"])
        values["sample_every"] = limits.whole_number(options.sample_every or every, "Sample every", 1, values["steps"])
        values["memory_mode"] = self.check_memory_mode(options.memory_mode)
        values["seed"] = limits.seed(options.seed, "The training seed")
        return values

    def check_numbers(self, values: dict) -> dict:
        """Steps, rank, learning rate and resolution: well-formed, sensible and within the engine's reach."""
        lim = self.limits
        steps = limits.whole_number(values.get("steps"), "Steps", 1, lim.max_steps, 1000)
        rank = limits.whole_number(values.get("rank"), "Rank", 1, lim.max_rank, 16)
        learning_rate = limits.number(values.get("learning_rate"), "Learning rate", 0.0, lim.max_lr, 0.0001)
        low, high = lim.train_resolution
        resolution = limits.whole_number(values.get("resolution"), "Resolution", low, high,
                                         self.image_size if self.tiny else 768)
        if resolution % lim.resolution_multiple:
            raise UserError(f"Resolution {resolution} does not fit this engine; give one {lim.resolution_hint()}.")
        errors = validate_hyperparameters(steps, rank, learning_rate, resolution, tiny=self.tiny)
        if errors:
            raise UserError(" ".join(errors))
        return dict(steps=steps, rank=rank, learning_rate=learning_rate, resolution=resolution)

    def check_memory_mode(self, mode) -> str:
        """A known mode this machine can run: quantized bases need a real model on an NVIDIA GPU."""
        mode = limits.memory_mode(mode, self.limits.engine)
        if mode in limits.QUANTIZED_MODES and self.limits.engine == "local":
            from ..engines.memory import plan_for, require_support

            manager = getattr(self._engine(), "manager", None)
            device = manager.device.type if manager is not None else "cpu"
            try:
                require_support(plan_for(mode, None, 1024), device)
            except EngineError as exc:
                raise UserError(str(exc)) from None
        return mode

    def start(self, dataset_id: str, options: TrainOptions) -> JobView:
        dataset = self.store.get("datasets", limits.record_id(dataset_id, "dataset id") or "")
        if dataset is None:
            raise UserError("Export a dataset from your selection first (Selection tab).")
        trigger = validate_trigger(options.trigger or dataset["trigger"])
        name = limits.name(options.name, "The LoRA's name", "mila")
        if not name:
            raise UserError("Give the LoRA a name.")
        values = self.resolve(options)
        with self.library.names_lock():  # the first training queued with a name keeps it
            why = self.library.name_taken(name)
            if why:
                raise UserError(why)
            params = dict(dataset_id=dataset["id"], name=name, trigger=trigger, **values)
            return self.jobs.submit(JOB_KIND, params, title=f"Train LoRA · {name}",
                                    character_id=dataset.get("character_id"))

    def _run(self, params: dict, reporter: JobReporter) -> dict:
        params = {**params, **self.check_numbers(params)}  # queued by an older version: re-check
        params["memory_mode"] = self.check_memory_mode(params.get("memory_mode"))
        params["seed"] = limits.seed(params.get("seed", 0), "The training seed")
        params["trigger"] = validate_trigger(params.get("trigger"))
        engine = self._engine()
        dataset = self.store.get("datasets", str(params.get("dataset_id")))
        if dataset is None:
            raise UserError("The dataset of this training was deleted; export it again from the Selection tab.")
        job_dir = self.store.job_dir(reporter.job_id)
        samples_dir = self.store.public_dir("jobs", reporter.job_id, "samples")
        output_dir = job_dir / "output"
        reference = None
        if dataset.get("character_id"):
            try:
                reference = self.characters.reference_path(dataset["character_id"])
            except UserError:
                reference = None
        request = TrainRequest(
            dataset_dir=self.store.root / dataset["dir"], output_dir=output_dir, work_dir=job_dir,
            trigger=params["trigger"], steps=params["steps"], rank=params["rank"], alpha=params.get("alpha"),
            learning_rate=params["learning_rate"], resolution=params["resolution"],
            train_mlp=params.get("train_mlp", True), memory_mode=params["memory_mode"],
            checkpoint_every=params["checkpoint_every"], sample_every=params["sample_every"],
            sample_prompt=f"photo of {params['trigger']}, portrait, looking at the camera",
            reference_image=reference, seed=params.get("seed", 0), resume=True,
            zip_path=self.store.root / dataset["zip"] if dataset.get("zip") else None,
            samples_dir=samples_dir,
        )
        reporter.log(f"Training {params['name']!r} on {dataset['count']} images with {engine.describe()}")
        started = time.time()
        if engine.manager is None:  # a remote engine trains where it runs and makes no samples for us
            result = engine.train(request, reporter)
        else:
            from ..training.trainer import train_on_manager

            scorer = None if engine.makes_noise else _sample_scorer(reference)
            result = train_on_manager(engine.manager, request, reporter, sample_scorer=scorer)
        lora = self.library.register_trained(
            name=params["name"], trigger=params["trigger"], result=result, job_id=reporter.job_id,
            character_id=dataset.get("character_id"), dataset=dataset, params=params,
            seconds=time.time() - started, samples_dir=samples_dir)
        out = {"lora_id": lora["id"], "lora_name": lora["name"], "final_loss": result.final_loss,
               "best_checkpoint": result.best_checkpoint}
        if lora["name"] != params["name"]:
            out["summary"] = (f"Saved as {lora['name']!r}: the name {params['name']!r} was taken while this "
                              "training ran.")
            reporter.log(out["summary"])
        return out


def _sample_scorer(reference_path):
    """Identity distance of each training sample to the reference face (None: no face)."""
    if reference_path is None:
        return None
    from .. import identity
    from ..images import open_image

    try:
        reference = identity.reference_descriptor(open_image(reference_path))
    except identity.NoFaceError:
        return None

    def score(image):
        return identity.score_image(image, reference).distance

    return score


__all__ = ["TrainingService", "TrainOptions", "asdict"]
