"""Training jobs: dataset → LoRA, on whichever engine is configured, registered when done.

A job's work folder is `jobs/<id>/`, so resuming the same job finds its checkpoints and caches.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from .. import gpu_calls
from ..engines.base import Engine, TrainRequest
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from ..training.presets import DEFAULT_PRESET, PRESETS, validate_hyperparameters
from .characters import Characters
from .costs import CostService, Estimate, parse_cap
from .library import LibraryService
from .presets import PresetFields, PresetStore
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
    memory_mode: str | None = None  # None = the preset's
    max_usd: float | None = None  # spending cap on Replicate; None = the preset's, 0 = none
    checkpoint_every: int | None = None
    sample_every: int | None = None
    seed: int = 0


class TrainingService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters, library: LibraryService,
                 engine: Callable[[], Engine], tiny: bool, image_size: int, device: str = "auto",
                 remote: bool = False, costs: CostService | None = None) -> None:
        self.store, self.jobs, self.characters, self.library = store, jobs, characters, library
        self._engine = engine
        self.tiny = tiny
        self.device, self.remote = device, remote  # for the memory plan, without building the engine
        self.image_size = image_size
        self.saved_presets = PresetStore(store.root, tiny, image_size)
        self.costs = costs or CostService(store.root, paid=False)
        jobs.register(JOB_KIND, self._run)

    default_preset = DEFAULT_PRESET

    def presets(self) -> list[str]:
        """Preset names for the form: the built-ins, then the user's saved ones."""
        return self.saved_presets.names()

    def preset_fields(self, name: str) -> dict:
        """A preset's form values and description (the tiny engine trains at its own size)."""
        fields = self.saved_presets.get(name)
        return dict(fields.form(), description=fields.description, builtin=fields.builtin)

    def save_preset(self, name: str, options: TrainOptions) -> str:
        """Save the form's values under a name (returned as stored); built-in names are refused in any case."""
        fields = PresetFields(steps=options.steps, rank=options.rank, learning_rate=options.learning_rate,
                              resolution=options.resolution, memory_mode=options.memory_mode or "auto",
                              max_usd=options.max_usd or 0.0)
        return self.saved_presets.save(name, fields)

    def delete_preset(self, name: str) -> None:
        self.saved_presets.delete(name)

    def estimate(self, steps) -> Estimate | None:
        """Expected Replicate cost and time of a training of `steps` (None when nothing is paid)."""
        try:
            steps = int(steps)
        except (TypeError, ValueError):
            return None
        return self.costs.training(steps) if steps > 0 else None

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
        preset = self.saved_presets.get(options.preset)
        builtin = self.saved_presets.builtin(options.preset)
        values = dict(steps=preset.steps, rank=preset.rank, learning_rate=preset.learning_rate,
                      resolution=builtin.resolution if builtin else preset.resolution,
                      alpha=builtin.alpha if builtin else float(preset.rank),
                      train_mlp=builtin.train_mlp if builtin else True)
        for key in ("steps", "rank", "learning_rate", "resolution"):
            if getattr(options, key) is not None:
                values[key] = getattr(options, key)
        if self.tiny and options.resolution is None and builtin:
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
        values["memory_mode"] = options.memory_mode or preset.memory_mode
        values["max_usd"] = parse_cap(preset.max_usd if options.max_usd is None else options.max_usd)
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
        estimate = self.costs.training(values["steps"])
        if estimate and values["max_usd"] and estimate.usd > values["max_usd"]:
            raise UserError(f"This training is expected to cost ≈ ${estimate.usd:.2f} on Replicate, above its "
                            f"spending cap of ${values['max_usd']:.2f}: raise the cap or train fewer steps.")
        params = dict(dataset_id=dataset_id, name=name, trigger=trigger, **values)
        if estimate:
            params["estimate"] = estimate.to_dict()
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
        meter = self.costs.meter(params.get("max_usd"))
        reporter.log(f"Training {params['name']!r} on {dataset['count']} images with {engine.describe()}")
        started = time.time()
        if engine.manager is None:  # a remote engine trains where it runs and makes no samples for us
            request = replace(request, max_seconds=meter.seconds_left("trainer"))
            try:
                result = meter.call("trainer", engine.train, request, reporter, units=params["steps"])
            finally:
                if meter.paid:
                    reporter.output("spending", meter.summary())
        else:  # here, or in GPU-call-sized chunks on a ZeroGPU Space
            scorer = None if engine.makes_noise else _sample_scorer(reference)
            result = gpu_calls.train(engine, request, reporter, sample_scorer=scorer)
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
        return FaceDistance(identity.reference_descriptor(open_image(reference_path)))
    except identity.NoFaceError:
        return None


@dataclass(frozen=True, eq=False)
class FaceDistance:
    """A sample's face distance to the reference; a picklable value, as a ZeroGPU call needs."""

    reference: object  # the reference face's descriptor

    def __call__(self, image) -> float | None:
        from .. import identity

        return identity.score_image(image, self.reference).distance


__all__ = ["TrainingService", "TrainOptions", "asdict"]
