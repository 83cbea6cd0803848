"""Training jobs: dataset → LoRA, on whichever engine is configured, registered when done.

A job's work folder is `jobs/<id>/`, so resuming the same job finds its checkpoints and caches.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from ..engines.base import Engine, TrainRequest
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from ..training.presets import DEFAULT_PRESET, PRESETS, TrainingPreset, validate_hyperparameters
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
                 engine: Callable[[], Engine], tiny: bool, image_size: int, device: str = "auto",
                 remote: bool = False) -> None:
        self.store, self.jobs, self.characters, self.library = store, jobs, characters, library
        self._engine = engine
        self.tiny = tiny
        self.device, self.remote = device, remote  # for the memory plan, without building the engine
        self.image_size = image_size
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

    def memory_modes(self) -> list[str]:
        from ..config import MEMORY_MODES

        return list(MEMORY_MODES)

    def memory_plan(self, resolution: int | None, mode: str = "auto", rank: int | None = None) -> str:
        """What `mode` plans to use on the GPU at this resolution and rank, in words (Training tab)."""
        from ..engines import memory

        preset = PRESETS[DEFAULT_PRESET]
        try:
            resolution = int(resolution) if resolution else preset.resolution
            rank = int(rank) if rank else preset.rank
        except (TypeError, ValueError):
            return "Type whole numbers for the resolution and rank to see the memory plan."
        if mode not in memory.MODES:
            return f"Unknown memory mode {mode!r}; choose one of {', '.join(memory.MODES)}."
        if resolution <= 0 or rank <= 0:
            return "Resolution and rank must be positive to plan the memory."
        if self.remote:
            return "This engine trains on Replicate's GPUs: the memory mode does not apply here."
        text = memory.describe_plans(mode, resolution, rank, preset.train_mlp, memory.gpu_memory_bytes(self.device))
        if self.tiny:
            text = "Tiny model: it trains on the CPU in seconds. For FLUX.1-dev: " + text
        return text

    def resolve(self, options: TrainOptions) -> dict:
        """Preset values overridden by what the user typed, validated, as TrainRequest fields."""
        if options.preset not in PRESETS:
            raise UserError(f"Unknown preset {options.preset!r}; choose {', '.join(PRESETS)}.")
        preset = PRESETS[options.preset]
        values = dict(steps=preset.steps, rank=preset.rank, learning_rate=preset.learning_rate,
                      resolution=preset.resolution, alpha=preset.alpha, train_mlp=preset.train_mlp)
        for key in ("steps", "rank", "learning_rate", "resolution"):
            if getattr(options, key) is not None:
                values[key] = getattr(options, key)
        if self.tiny and options.resolution is None:
            values["resolution"] = self.image_size
        try:
            values["steps"], values["rank"] = int(values["steps"]), int(values["rank"])
            values["learning_rate"], values["resolution"] = float(values["learning_rate"]), int(values["resolution"])
        except (TypeError, ValueError):
            raise UserError("Steps, rank and resolution must be whole numbers; learning rate a number.") from None
        errors = validate_hyperparameters(values["steps"], values["rank"], values["learning_rate"],
                                          values["resolution"], tiny=self.tiny)
        if errors:
            raise UserError(" ".join(errors))
        every = max(1, values["steps"] // 4)
        values["checkpoint_every"] = options.checkpoint_every or every
        values["sample_every"] = options.sample_every or every
        values["memory_mode"] = options.memory_mode
        values["seed"] = options.seed
        return values

    def start(self, dataset_id: str, options: TrainOptions) -> JobView:
        dataset = self.store.get("datasets", dataset_id or "")
        if dataset is None:
            raise UserError("Export a dataset from your selection first (Selection tab).")
        trigger = validate_trigger(options.trigger or dataset["trigger"])
        name = (options.name or "").strip()[:60]
        if not name:
            raise UserError("Give the LoRA a name.")
        if self.library.find_by_name(name):
            raise UserError(f"A LoRA named {name!r} already exists; pick another name or delete it.")
        values = self.resolve(options)
        params = dict(dataset_id=dataset_id, name=name, trigger=trigger, **values)
        return self.jobs.submit(JOB_KIND, params, title=f"Train LoRA · {name}",
                                character_id=dataset.get("character_id"))

    def _run(self, params: dict, reporter: JobReporter) -> dict:
        engine = self._engine()
        dataset = self.store.require("datasets", params["dataset_id"])
        job_dir = self.store.job_dir(reporter.job_id)
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
            seconds=time.time() - started)
        return {"lora_id": lora["id"], "lora_name": lora["name"], "final_loss": result.final_loss,
                "best_checkpoint": result.best_checkpoint}


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
