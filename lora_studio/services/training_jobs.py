"""Training jobs: dataset → LoRA, on whichever engine is configured, registered when done.

A job's work folder is `jobs/<id>/`, so resuming the same job finds its checkpoints and caches; its
samples go to the served `public/jobs/<id>/samples/`. A job stores a `TrainParams` (job_params.py);
every number is checked against what the engine can serve when the job is submitted, and again when
it starts (a job queued by an older version may hold anything).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from .. import gpu_calls
from ..config import MEMORY_MODES, TrainPlacement
from ..engines.base import Engine, EngineError, TrainRequest
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from ..training.placement import worker_processes
from ..training.presets import DEFAULT_PRESET, MAX_ALPHA_PER_RANK, PRESETS, validate_alpha
from . import limits
from .characters import Characters
from .costs import CostService, Estimate, parse_cap
from .job_params import TrainParams
from .library import LibraryService
from .preset_store import PresetFields, PresetStore
from .selection import validate_trigger

JOB_KIND = "train"


@dataclass(frozen=True)
class TrainOptions:
    name: str
    trigger: str
    preset: str = "Standard"
    steps: int | None = None
    rank: int | None = None
    alpha: float | None = None  # None: the rank times the preset's alpha/rank (see resolve)
    learning_rate: float | None = None
    resolution: int | None = None
    memory_mode: str | None = None  # None = the preset's
    max_usd: float | None = None  # spending cap on Replicate; None = the preset's, 0 = none
    checkpoint_every: int | None = None
    sample_every: int | None = None
    seed: int = 0
    train_on: str | None = None  # where it trains (TrainPlacement spec: off | isolated | 0,1 | …); None = the app's


TINY_MEMORY_NOTE = ("Tiny built-in model: a few megabytes of random weights, trained in full precision in "
                    "seconds on the CPU or a GPU alike. Memory modes matter with a real model on a GPU: "
                    "choose one in Settings → Engine to see its plan here.")


class TrainingService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters, library: LibraryService,
                 engine: Callable[[], Engine], tiny: bool, image_size: int, device: str = "auto",
                 remote: bool = False, costs: CostService | None = None,
                 engine_limits: limits.EngineLimits | None = None, kontext_model: str | None = None,
                 train_gpus: str = "off", model: str | None = None) -> None:
        self.store, self.jobs, self.characters, self.library = store, jobs, characters, library
        self.kontext_model = kontext_model  # its transformer waits off the GPU while FLUX.1-dev's trains
        self.model = model  # the local engine's model (its family and size decide the plan); None: tiny, remote
        self._engine = engine
        self.tiny = tiny
        self.device, self.remote = device, remote  # for the memory plan, without building the engine
        self.image_size = image_size
        self.costs = costs or CostService(store.root, paid=False)
        self.limits = engine_limits or limits.limits_for("tiny" if tiny else "local")
        self.saved_presets = PresetStore(store.root, tiny, image_size, self.limits)
        self.default_placement = "off" if remote else TrainPlacement.parse(train_gpus).spec()
        jobs.register(JOB_KIND, self._run, params=TrainParams)

    def placements(self) -> list[tuple[str, str]]:
        """(label, value) of the places a training may run here: the app's process, one isolated worker,
        and the data-parallel workers the app was started with (--train-gpus), if any."""
        if self.remote:
            return [("On Replicate's GPUs", "off")]
        found = {"off": "In the app's process (one GPU, no second copy of the model)",
                 "isolated": "In an isolated worker process (a crash there cannot stop the app)"}
        chosen = TrainPlacement.parse(self.default_placement)
        if chosen.kind == "workers":
            found[chosen.spec()] = f"In worker processes: {chosen.describe()}"
        return [(label, value) for value, label in found.items()]

    def check_placement(self, value) -> str:
        """One of the offered places (blank: the app's default); refused in words otherwise."""
        value = limits.text(value, "Where it trains", 40) or self.default_placement
        offered = [choice for _, choice in self.placements()]
        if value not in offered:
            raise UserError(f"A training can run {' or '.join(repr(v) for v in offered)} here, not {value!r}.")
        return value

    def placement_note(self, value) -> str:
        """What a place means for the app's own model, in words (Training tab)."""
        try:
            placement = TrainPlacement.parse(self.check_placement(value))
        except (UserError, ValueError) as exc:
            return str(exc)
        if self.remote or placement.kind == "app":
            return f"Trains {placement.describe()}."
        return (f"Trains {placement.describe()}: the workers load the model themselves, so a failure there "
                "fails the job, not the app. The app's model leaves any GPU they use (the next image reloads it) "
                "and stays on a GPU they do not use; the job log says which.")

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
        return self.saved_presets.save(name, PresetFields.of(options))

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
        if mode not in MEMORY_MODES:
            return f"Unknown memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}."
        if resolution <= 0 or rank <= 0:
            return "Resolution and rank must be positive to plan the memory."
        if self.remote:
            return "This engine trains on Replicate's GPUs: the memory mode does not apply here."
        if self.tiny:
            return TINY_MEMORY_NOTE
        from ..engines.local import architecture_of, choose, model_family

        gpu = memory.gpu_memory_bytes(self.device)
        family = model_family(self.model)
        if family.key == "flux1":
            text = memory.describe_plans(mode, resolution, rank, preset.train_mlp, gpu)
            if self.kontext_model:
                text += " " + memory.idle_transformer_note()
            return text
        own = architecture_of(self.model)  # Klein: the configured size first, then the other one
        plans = [f"{memory.ARCHITECTURE_TITLES[a]}: {memory.describe_plans(mode, resolution, rank, preset.train_mlp, gpu, a)}"
                 for a in sorted(family.architectures, key=lambda a: a != own)]
        text = " ".join(plans)
        pairing = choose(self.model, self.kontext_model, False)
        if pairing.training != pairing.pictures:  # the distilled transformer waits while the base trains
            text += " " + memory.idle_transformer_note(own)
        return text

    def resolve(self, options: TrainOptions) -> dict:
        """Preset values overridden by what the user typed, validated, as TrainRequest fields.

        Alpha: the one typed, else the rank times the preset's alpha/rank ratio (1 for the built-ins
        and for saved presets without an alpha). A typed rank with no alpha keeps the ratio, so
        changing only the rank never changes the LoRA's scale alpha/rank."""
        preset_name = limits.text(options.preset, "The preset", 40) or DEFAULT_PRESET
        preset = self.saved_presets.get(preset_name)
        builtin = self.saved_presets.builtin(preset_name)
        values = dict(steps=preset.steps, rank=preset.rank, learning_rate=preset.learning_rate,
                      resolution=builtin.resolution if builtin else preset.resolution,
                      train_mlp=builtin.train_mlp if builtin else True)
        for key in ("steps", "rank", "learning_rate", "resolution"):
            if getattr(options, key) is not None:
                values[key] = getattr(options, key)
        ratio = builtin.alpha / builtin.rank if builtin else (preset.alpha or preset.rank) / preset.rank
        if self.tiny and options.resolution is None and builtin:
            values["resolution"] = self.image_size
        values.update(self.check_numbers(values))
        alpha = values["rank"] * ratio if options.alpha is None else options.alpha
        values["alpha"] = self.check_alpha(alpha, values["rank"])
        every = max(1, values["steps"] // 4)
        values["checkpoint_every"] = limits.whole_number(options.checkpoint_every or every, "Checkpoint every", 1,
                                                         values["steps"])
        values["sample_every"] = limits.whole_number(options.sample_every or every, "Sample every", 1, values["steps"])
        values["memory_mode"] = self.check_memory_mode(options.memory_mode or preset.memory_mode)
        values["max_usd"] = parse_cap(preset.max_usd if options.max_usd is None else options.max_usd)
        values["seed"] = limits.seed(options.seed, "The training seed")
        values["train_on"] = self.check_placement(options.train_on)
        return values

    def check_numbers(self, values: dict) -> dict:
        """Steps, rank, learning rate and resolution: well-formed, sensible and within the engine's reach."""
        return limits.training_numbers(values, self.limits, self.tiny, self.image_size)

    def check_alpha(self, alpha, rank: int) -> float:
        """A number above 0, at most 4x the rank (scale alpha/rank up to 4); the rank itself on Replicate."""
        alpha = limits.number(alpha, "Alpha", 0.0, MAX_ALPHA_PER_RANK * rank, rank)
        if self.limits.engine == "replicate" and alpha != rank:
            raise UserError(f"Replicate's Flux trainer (ai-toolkit) always trains with alpha = rank; leave Alpha "
                            f"blank or give {rank}.")
        errors = validate_alpha(alpha, rank)
        if errors:
            raise UserError(" ".join(errors))
        return alpha

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
        estimate = self.costs.training(values["steps"])
        if estimate and values["max_usd"] and estimate.usd > values["max_usd"]:
            raise UserError(f"This training is expected to cost ≈ ${estimate.usd:.2f} on Replicate, above its "
                            f"spending cap of ${values['max_usd']:.2f}: raise the cap or train fewer steps.")
        with self.library.names_lock():  # the first training queued with a name keeps it
            why = self.library.name_taken(name)
            if why:
                raise UserError(why)
            params = TrainParams(dataset_id=dataset["id"], name=name, trigger=trigger, **values,
                                 estimate=estimate.to_dict() if estimate else None)
            return self.jobs.submit(JOB_KIND, params, title=f"Train LoRA · {name}",
                                    character_id=dataset.get("character_id"))

    def recheck(self, params: TrainParams) -> TrainParams:
        """A stored training's values checked again (queued by an older version, or before a limit changed)."""
        params = replace(params, **self.check_numbers(asdict(params)))
        alpha = params.rank if self.limits.engine == "replicate" else params.alpha or params.rank
        every = max(1, params.steps // 4)  # what `resolve` picks, for records that predate the two settings
        return replace(
            params, alpha=self.check_alpha(alpha, params.rank),  # Replicate trains at alpha = rank whatever
            memory_mode=self.check_memory_mode(params.memory_mode), trigger=validate_trigger(params.trigger),
            seed=limits.seed(params.seed, "The training seed"),
            checkpoint_every=limits.whole_number(params.checkpoint_every or every, "Checkpoint every", 1, params.steps),
            sample_every=limits.whole_number(params.sample_every or every, "Sample every", 1, params.steps))

    def _run(self, params: TrainParams, reporter: JobReporter) -> dict:
        params = self.recheck(params)
        placement, batch_size = self._placement(params, reporter)
        params = replace(params, batch_size=batch_size)
        engine = self._engine()
        dataset = self.store.get("datasets", params.dataset_id)
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
            trigger=params.trigger, steps=params.steps, rank=params.rank, alpha=params.alpha,
            learning_rate=params.learning_rate, resolution=params.resolution,
            train_mlp=params.train_mlp, memory_mode=params.memory_mode, batch_size=params.batch_size,
            checkpoint_every=params.checkpoint_every, sample_every=params.sample_every,
            sample_prompt=f"photo of {params.trigger}, portrait, looking at the camera",
            reference_image=reference, seed=params.seed, resume=True,
            zip_path=self.store.root / dataset["zip"] if dataset.get("zip") else None,
            samples_dir=samples_dir,
        )
        meter = self.costs.meter(params.max_usd)
        reporter.log(f"Training {params.name!r} on {dataset['count']} images with {engine.describe()}")
        started = time.time()
        if engine.manager is None:  # a remote engine trains where it runs and makes no samples for us
            request = replace(request, max_seconds=meter.seconds_left("trainer"))
            try:
                result = meter.call("trainer", engine.train, request, reporter, units=params.steps)
            finally:
                if meter.paid:
                    reporter.output("spending", meter.summary())
        else:  # here, or in GPU-call-sized chunks on a ZeroGPU Space
            scorer = None if engine.makes_noise else _sample_scorer(reference)
            result = gpu_calls.train(engine, request, reporter, sample_scorer=scorer, placement=placement)
        lora = self.library.register_trained(
            name=params.name, trigger=params.trigger, result=result, job_id=reporter.job_id,
            character_id=dataset.get("character_id"), dataset=dataset, params=params,
            seconds=time.time() - started, samples_dir=samples_dir)
        out = {"lora_id": lora["id"], "lora_name": lora["name"], "final_loss": result.final_loss,
               "best_checkpoint": result.best_checkpoint}
        if lora["name"] != params.name:
            out["summary"] = (f"Saved as {lora['name']!r}: the name {params.name!r} was taken while this "
                              "training ran.")
            reporter.log(out["summary"])
        return out


    def _placement(self, params: TrainParams, reporter: JobReporter) -> tuple[TrainPlacement, int]:
        """Where this run trains, and the effective batch it keeps for life: one sample per process of its
        first run (kohya's batch per device), stored with the job, so a resume on another number of
        processes splits the same global batch and continues the same run."""
        try:
            spec = self.check_placement(params.train_on)
        except UserError:
            spec = self.default_placement
            reporter.log(f"This job asked to train {params.train_on!r}, which this app no longer offers; "
                         f"it trains {TrainPlacement.parse(spec).describe()} instead.")
        placement = TrainPlacement.parse(spec)
        batch = params.batch_size
        if batch is None or not 1 <= batch <= 64:
            batch = worker_processes(placement) if not self.remote else 1
            self.store.mutate("jobs", reporter.job_id,
                              lambda job: job.setdefault("params", {}).update(batch_size=batch))
        if batch > 1 or placement.kind == "workers":
            reporter.log(f"Effective batch {batch} per step (split across the processes), learning "
                         f"rate {params.learning_rate:g} as given, {params.steps} optimizer steps.")
        return placement, batch


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
