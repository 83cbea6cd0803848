"""`Studio`: the one object the UI, the CLI and Python scripts talk to.

It owns the store, the job queue and the engine (built on first use, so start-up loads no model)
and exposes each workflow as a service. Scripts can call it directly:

    studio = Studio(Settings.from_env(workspace="ws"))
    image = studio.generate("at the beach", task="mila")
"""
from __future__ import annotations

import threading
from pathlib import Path

from PIL import Image

from . import gpu_calls
from .config import Settings
from .engines.base import Defaults, Engine, defaults_of, family_of
from .engines.flight import at_once
from .engines.hub import recover_token_file
from .jobs import JobQueue, JobView, UserError
from .services.captions import CaptionService
from .services.characters import Characters
from .services.costs import CostService
from .services.generate import GenerateOptions, GenerateService
from .services.library import LibraryService
from .services.settings import ModelsService
from .services import preferences
from .services.preferences import Preferences
from .services.hub_import import HubImports
from .services.publish import PublishService
from .services.limits import limits_for
from .services.settings import ReplicateSetup
from .services.selection import SelectionService
from .services.settings import EngineChoice, SetupService
from .services.settings import check as check_choice
from .services.sheet import SheetService
from .services.tester import SweepRequest, TesterService
from .services.training_jobs import TrainingService
from .store import MovedAside, Store, recover_json

JOB_RUNS = ("A job is running: the engine switches when it ends. Wait for it, or stop it under Library → "
            "All jobs, then switch (queued jobs wait for the switch and run on the new engine).")


class Studio:
    def __init__(self, settings: Settings | None = None, engine: Engine | None = None,
                 start: bool = True) -> None:
        settings = settings or Settings.from_env()
        self.store = Store(settings.workspace)
        self.setup = SetupService(self.store.root)
        moved = [m for m in (recover_json(self.setup.path, self.setup.verify), recover_token_file()) if m]
        self.settings = self.setup.apply(settings)  # the page's last choice, where no flag or variable pinned one
        # downloads and publishing never wait for the GPU
        self.jobs = JobQueue(self.store, side_kinds=("download", "publish", "lora_download"))
        self._engine = engine
        self._engine_lock = threading.Lock()
        self.preferences = Preferences(self.store.root)
        self.characters = Characters(self.store)
        self.selection = SelectionService(self.store, self.characters)
        self._build_engine_services()
        self.models = ModelsService(self.store, self.jobs, device=self.settings.device, on_ready=self.use_downloaded)
        self.moved = self.store.moved + moved + self._recover_settings()
        if start:
            self.jobs.start()
            self.models.resume_interrupted()

    def _build_engine_services(self) -> None:
        """Everything whose behaviour depends on the engine: costs, limits, image size and the workflows.
        Built again by `reconfigure`; the services reach the engine through `self.engine` at call time."""
        settings, size = self.settings, self.settings.image_size
        remote = settings.engine == "replicate"
        self.costs = CostService(self.store.root, paid=remote, parallel=settings.replicate.parallel if remote else 1)
        self.limits = limits_for(settings.engine)  # what this engine can serve; checked at the door
        self.replicate = ReplicateSetup(self.store.root, settings.replicate)
        self.library = LibraryService(self.store, self.engine)
        self.sheet = SheetService(self.store, self.jobs, self.characters, self.engine, size,
                                  score_sheet=self.selection.score, costs=self.costs)
        self.training = TrainingService(self.store, self.jobs, self.characters, self.library, self.engine,
                                        tiny=settings.is_tiny, image_size=size, device=settings.device,
                                        remote=settings.engine == "replicate", costs=self.costs,
                                        engine_limits=self.limits, kontext_model=settings.kontext_model,
                                        train_gpus=settings.train_gpus,
                                        model=settings.local_model if settings.engine == "local" else None)
        self.tester = TesterService(self.store, self.jobs, self.characters, self.library, self.engine, size,
                                    costs=self.costs, engine_limits=self.limits)
        self.generator = GenerateService(self.store, self.jobs, self.library, self.engine, size,
                                         settings.tasks_file, costs=self.costs, engine_limits=self.limits,
                                         drawing=self.drawing_defaults)
        self.publish = PublishService(self.store, self.jobs, self.library)
        self.hub_imports = HubImports(self.store, self.jobs, self.library)
        self.captions = CaptionService(self.store, self.jobs, self.characters, tiny=settings.is_tiny,
                                       device=settings.device, release_gpu=self._release_gpu)
        self.jobs.places = self._named_places()

    def _release_gpu(self) -> None:
        """Free the loaded Flux model's GPU memory for other GPU work (a captioner); the next picture reloads it."""
        engine = self._engine
        unload = getattr(engine, "unload", None) if engine is not None else None
        if callable(unload):
            unload()

    def _named_places(self) -> tuple[tuple[Path, str], ...]:
        """Folders a job's words name instead of their path (records are served to anyone with the link)."""
        from .engines.hub import cache_root

        places = [(cache_root(), "the Hugging Face cache")]
        for model, words in ((self.settings.model, "your model folder"),
                             (self.settings.kontext_model, "your Kontext model folder")):
            if model and Path(model).expanduser().is_absolute():
                places.append((Path(model).expanduser(), words))
        return tuple(places)

    def _recover_settings(self) -> list[MovedAside]:
        """Each settings file that cannot be read, served or pass its own rules is set aside with a
        timestamp and the defaults are used: nothing stored by a request can stop the next start."""
        from .services.generate import load_tasks

        root, tasks = self.store.root, self.generator.tasks_file
        checks = ((root / "replicate_prices.json", self.costs.verify),
                  (self.training.saved_presets.path, self.training.saved_presets.verify),
                  (self.preferences.path, preferences.verify),
                  (tasks, lambda raw: load_tasks(tasks)))
        return [moved for path, check in checks if (moved := recover_json(path, check))]

    def startup_notes(self) -> list[str]:
        """One sentence per settings file set aside at this start (the banner and the log show them), and
        the page's engine choice when setup.json could not be used."""
        return [moved.sentence() for moved in self.moved] + ([self.setup.note] if self.setup.note else [])

    def engine(self) -> Engine:
        """The configured engine, built the first time work needs it."""
        with self._engine_lock:
            if self._engine is None:
                from .engines import make_engine

                self._engine = gpu_calls.for_engine(make_engine(self.settings))  # ZeroGPU: GPU calls
            return self._engine

    def reconfigure(self, choice: EngineChoice) -> Settings:
        """Switch engine and models without a restart: checked first, refused in words while a job runs
        (queued jobs wait for the switch), flags and variables still win. The old engine's model is
        freed; the new one loads with the next job. The choice is remembered in the workspace."""
        choice = check_choice(choice)
        conflict = self.setup.pinned_conflict(self.settings, choice)
        if conflict:
            raise UserError(conflict)
        with self.jobs.gate.hold(JOB_RUNS):
            settings = self.setup.apply(self.settings, choice)
            self.setup.remember(self.settings, choice)  # first: a disk that refuses it changes nothing
            with self._engine_lock:
                old, self._engine = self._engine, None
                self.settings = settings
                self._build_engine_services()
            unload = getattr(old, "unload", None)
            if callable(unload):
                unload()  # before any job can load the new model: one base in memory at a time
        return settings

    def use_downloaded(self, model: str) -> str:
        """Switch to a model the first-run offer downloaded (the local engine, its second model found by
        itself), unless a flag pins the engine or a job runs now: then say how to switch by hand."""
        current = self.setup.choice(self.settings)
        try:
            self.reconfigure(EngineChoice("local", model, "", current.destination))
        except UserError as refused:
            return f"{model} is on disk; switch to it in Settings → Engine ({refused})"
        return f"The app now runs {model} (Settings → Engine)."

    def draws_noise(self) -> bool:
        """Whether pictures are noise (a built-in random-weight model), so the UI says so plainly."""
        if self._engine is not None:
            return self._engine.makes_noise
        if self.settings.engine != "local":
            return self.settings.is_tiny
        from .engines.local import RANDOM_WEIGHTS

        return self.settings.local_model in RANDOM_WEIGHTS

    def drawing_defaults(self) -> tuple[str, Defaults]:
        """The family key and the steps and guidance pictures use, without building the engine (the page
        asks on load; the first job loads the model): a distilled Klein draws in 4 steps without CFG."""
        if self._engine is not None:
            return family_of(self._engine).key, defaults_of(self._engine)
        from .engines.family import FLUX1

        if self.settings.engine != "local":
            return FLUX1.key, FLUX1.base_defaults
        from .engines.local import RANDOM_WEIGHTS, choose, model_family

        model = self.settings.local_model
        family = model_family(model)
        pairing = choose(model, self.settings.kontext_model, random_weights=model in RANDOM_WEIGHTS)
        return family.key, family.defaults(pairing.pictures == "distilled")

    def engine_description(self) -> str:
        if self._engine is not None:
            return self._engine.describe()
        if self.settings.is_tiny:
            return ("Tiny built-in Flux (random weights): every step runs for real, but the images are "
                    "noise. Choose a real model in Settings → Engine for real pictures (no restart needed).")
        if self.settings.engine == "replicate":
            return (f"Replicate (remote GPUs). {at_once(self.settings.replicate.parallel)} "
                    f"{self.replicate.status().text()}")
        from .engines.local import (RANDOM_WEIGHTS, TINY_IDS, architecture_of, choose, model_family, model_label,
                                    sheet_sentence)
        from .engines.speed import describe_choice

        model = self.settings.local_model
        family = model_family(model)
        speed = describe_choice(self.settings.speed, self.settings.device, self.settings.memory_mode,
                                tiny=model in TINY_IDS, family=family, architecture=architecture_of(model))
        sheet = sheet_sentence(choose(model, self.settings.kontext_model, random_weights=model in RANDOM_WEIGHTS))
        return (f"Local {family.title} from {model_label(model)} (loaded by the first job). {speed} {sheet} "
                f"{at_once(1, self.settings.speed.batch_edits or 1)}")

    def gpu_note(self) -> str:
        """A line for the engine banner when GPU work runs as ZeroGPU calls ('' elsewhere)."""
        return gpu_calls.banner_note(self.settings.engine)

    # ---- Python API ---------------------------------------------------------------------------
    def generate(self, prompt: str = "", *, loras: dict[str, float] | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, steps: int | None = None,
                 guidance: float | None = None, task: str | None = None, timeout: float = 3600) -> Image.Image:
        """One image; sizes, steps and guidance left out are the model family's (`generator.form()`)."""
        job = self.generator.start(GenerateOptions(prompt=prompt, loras=loras or {}, seed=seed, width=width,
                                                   height=height, steps=steps, guidance=guidance, task=task))
        done = self.wait(job.id, timeout)
        return Image.open(self.store.path(done.outputs["image"])).copy()

    def sweep(self, lora: str, prompt: str, **kwargs) -> JobView:
        return self.wait(self.tester.start(SweepRequest(lora=lora, prompt=prompt, **kwargs)).id)

    def wait(self, job_id: str, timeout: float = 3600) -> JobView:
        view = self.jobs.wait(job_id, timeout)
        if view.status != "succeeded":
            raise UserError(view.error or f"Job {view.title} ended {view.status}.")
        return self.jobs.get(job_id, with_metrics=True)

    def close(self) -> None:
        self.jobs.stop()
        self.store.close()

    def __enter__(self) -> "Studio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Studio", "Settings", "Path"]
