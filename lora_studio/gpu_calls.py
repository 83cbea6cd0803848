"""Every GPU call of the app, in one place, so a Hugging Face ZeroGPU Space can run it.

On ZeroGPU a GPU exists only inside a function decorated with `spaces.GPU(duration=...)`. The
`spaces` package runs such a call in a forked worker process (arguments and results are pickled;
what the call changes in memory does not come back) and aborts it when its duration runs out
(a few minutes at most). So here:

- each engine call that carries image requests (a sheet variation, a sweep cell, a generation)
  is one GPU call, with a duration from its steps and size;
- training runs in chunks: each GPU call trains `chunk_steps` steps, resuming from the previous
  chunk's checkpoint on disk and ending with a checkpoint (the trainer's exact resume makes the
  chunks equal to one run). Its logs and metrics come back with the result and are replayed
  into the job, and a stop acts between chunks.

Off ZeroGPU (no `spaces`, or `spaces.GPU` is the no-op it is outside ZeroGPU hardware) engines
are used as they are and training is one call: nothing changes.
"""
from __future__ import annotations

import functools
import os
import pickle
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .config import TrainPlacement, zero_gpu_requested
from .engines.base import EditRequest, EngineError, GenerateRequest, TrainRequest, TrainResult
from .errors import StudioError
from .progress import Canceled, Reporter, hearing_steps


# Estimates for FLUX.1 in bf16 on ZeroGPU's H200 slice, in seconds; unmeasured here (no GPU):
# a duration only bounds a call (ZeroGPU bills the time used), so they err on the long side.
OVERHEAD_SECONDS = 45  # a fresh worker moves (or loads) the base model; training re-reads its caches
EDIT_STEP_SECONDS = 0.9  # Kontext, per step and megapixel: it attends to the reference tokens too
GENERATE_STEP_SECONDS = 0.5  # text-to-image, per step and megapixel
TRAIN_STEP_SECONDS_512 = 1.0  # one LoRA step at 512 px, batch 1; grows with the pixel count
SAMPLE_SECONDS = 20  # one training sample image
CHECKPOINT_SECONDS = 5
TRAIN_CALL_SECONDS = 150  # the length one training chunk aims at
MAX_CALL_SECONDS = 240  # ZeroGPU refuses longer calls (about 300 s for logged-in visitors)


# ---- is ZeroGPU here? ----------------------------------------------------------------------------
def spaces_module():
    """The real `spaces` package, or None where it is not installed (hidden: sys.modules['spaces']=None)."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def zero_gpu_active() -> bool:
    return zero_gpu_requested() and spaces_module() is not None


# ---- the GPU side: what runs inside a GPU call ---------------------------------------------------
_ENGINES: dict[str, Any] = {}  # filled before any call; a forked worker inherits it


@dataclass
class Outcome:
    """What a GPU call sends back: a value or an error that keeps its message, plus recorded events."""

    value: Any = None
    error: BaseException | None = None
    events: list = field(default_factory=list)

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Recorder:
    """A Reporter that travels to the GPU worker and back; the job's own reporter replays it."""

    cancel_requested = False  # a stop is seen between calls, by the job's reporter

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple]] = []

    def log(self, message: str) -> None:
        self.events.append(("log", (message,)))

    def progress(self, fraction: float, message: str = "") -> None:
        self.events.append(("progress", (fraction, message)))

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.events.append(("metric", (name, float(value), step)))

    def output(self, key: str, value: Any) -> None:
        self.events.append(("output", (key, value)))

    def check_cancel(self) -> None:
        pass


def replay(events: list[tuple[str, tuple]], reporter: Reporter) -> None:
    for kind, args in events:
        getattr(reporter, kind)(*args)


def engine_call(key: str, method: str, args: tuple, kwargs: dict) -> Outcome:
    """One engine method call (an image, or a batch of them) where the GPU is."""
    try:
        with hearing_steps(None):  # a forked worker copied the job's listener: it must not write the record
            return Outcome(value=getattr(_engine(key), method)(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - carried back to the job whole
        return Outcome(error=_portable(exc))


def train_chunk(key: str, request: TrainRequest, sample_scorer: Callable | None) -> Outcome:
    """Up to `request.stop_after` training steps on the engine's model manager, then a checkpoint."""
    recorder = Recorder()
    try:
        from .training.trainer import train_on_manager

        result = train_on_manager(_engine(key).manager, request, recorder, sample_scorer=sample_scorer)
        return Outcome(value=result, events=recorder.events)
    except Exception as exc:  # noqa: BLE001
        return Outcome(error=_portable(exc), events=recorder.events)


def _engine(key: str):
    try:
        return _ENGINES[key]
    except KeyError:
        raise EngineError("The GPU worker does not know this engine; restart the Space.") from None


def _portable(exc: Exception) -> Exception:
    """The error itself if it survives pickling (its message reaches the user), else its text."""
    if not isinstance(exc, StudioError):
        traceback.print_exc()  # the Space's log keeps the worker's traceback
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return EngineError(f"{type(exc).__name__}: {exc}")


# ---- durations: what each call asks ZeroGPU for -------------------------------------------------
def image_requests(values) -> list:
    found = []
    for value in values:
        if isinstance(value, (EditRequest, GenerateRequest)):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(image_requests(value))
    return found


def image_seconds(request: EditRequest | GenerateRequest) -> float:
    megapixels = max(request.width * request.height / 1e6, 0.25)
    per_step = EDIT_STEP_SECONDS if isinstance(request, EditRequest) else GENERATE_STEP_SECONDS
    return request.steps * per_step * megapixels


def train_step_seconds(request: TrainRequest) -> float:
    """One step, with the sample images it draws spread over the steps."""
    pixels = (request.resolution / 512) ** 2 * max(1, request.batch_size)
    samples = SAMPLE_SECONDS / request.sample_every if request.sample_every > 0 else 0.0
    return TRAIN_STEP_SECONDS_512 * pixels + samples


def chunk_steps(request: TrainRequest) -> int:
    """Steps per GPU call, so one chunk lasts about TRAIN_CALL_SECONDS."""
    budget = TRAIN_CALL_SECONDS - OVERHEAD_SECONDS - SAMPLE_SECONDS - CHECKPOINT_SECONDS
    return max(1, int(budget / train_step_seconds(request)))


def engine_call_seconds(key: str, method: str, args: tuple, kwargs: dict) -> int:
    work = sum(image_seconds(r) for r in image_requests([*args, *kwargs.values()]))
    return _cap(OVERHEAD_SECONDS + work)


def train_chunk_seconds(key: str, request: TrainRequest, sample_scorer: Callable | None) -> int:
    steps = min(request.stop_after or request.steps, request.steps)
    work = steps * train_step_seconds(request) + SAMPLE_SECONDS + CHECKPOINT_SECONDS  # + the final sample
    return _cap(OVERHEAD_SECONDS + work)


def _cap(seconds: float) -> int:
    return int(min(MAX_CALL_SECONDS, max(1, round(seconds))))


# ---- the entry points, wrapped once ------------------------------------------------------------
@dataclass(frozen=True)
class EntryPoint:
    name: str
    plain: Callable  # the function itself
    function: Callable  # what is called: spaces.GPU's wrapper on ZeroGPU, else `plain`
    duration: Callable[..., int]  # seconds asked for, from the call's own arguments
    via_spaces: bool  # passed through spaces.GPU (a no-op off ZeroGPU hardware)

    @property
    def zero_gpu(self) -> bool:
        """spaces.GPU returned its ZeroGPU wrapper (it marks it with a `zerogpu` attribute)."""
        return self.function is not self.plain and hasattr(self.function, "zerogpu")


GPU_FUNCTIONS: dict[str, tuple[Callable, Callable[..., int]]] = {
    "engine_call": (engine_call, engine_call_seconds),
    "train_chunk": (train_chunk, train_chunk_seconds),
}
_entry_points: dict[str, EntryPoint] | None = None


def build_entry_points(decorate: Callable | None = None) -> dict[str, EntryPoint]:
    """Each GPU function through `decorate(fn, duration)`; by default spaces.GPU, when installed."""
    spaces = spaces_module() if decorate is None else None
    if decorate is None and spaces is not None:
        def decorate(fn, duration):
            return spaces.GPU(duration=duration)(fn)
    return {name: EntryPoint(name, fn, decorate(fn, duration) if decorate else fn, duration,
                             via_spaces=spaces is not None)
            for name, (fn, duration) in GPU_FUNCTIONS.items()}


def entry_points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = build_entry_points()
    return _entry_points


def report() -> list[dict]:
    """Which GPU functions are registered, how, and how long each asks for (see tests/test_spaces.py)."""
    return [dict(name=e.name, via_spaces=e.via_spaces, zero_gpu=e.zero_gpu, duration=e.duration.__name__)
            for e in entry_points().values()]


# ---- the app side --------------------------------------------------------------------------------
class GpuEngine:
    """An engine whose calls with image requests are GPU calls; everything else is the engine's own."""

    def __init__(self, engine) -> None:
        self.inner = engine
        self.key = f"{type(engine).__name__}-{id(engine):x}"
        _ENGINES[self.key] = engine

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            if not image_requests([*args, *kwargs.values()]):
                return attr(*args, **kwargs)
            return entry_points()["engine_call"].function(self.key, name, args, kwargs).unwrap()

        return call


def for_engine(engine):
    """The engine the app should use: wrapped on ZeroGPU when it runs models here, else itself."""
    if zero_gpu_active() and getattr(engine, "manager", None) is not None:
        return GpuEngine(engine)
    return engine


def preload(engine) -> None:
    """On ZeroGPU, load the base before launch: `spaces` packs its weights once for every worker."""
    if isinstance(engine, GpuEngine):
        engine.manager.text_to_image()


def train(engine, request: TrainRequest, reporter: Reporter,
          sample_scorer: Callable | None = None, placement: TrainPlacement | None = None) -> TrainResult:
    """Train on the engine's model manager: in GPU-call-sized chunks on ZeroGPU, whatever the placement;
    elsewhere where `placement` says (training/placement.py)."""
    if isinstance(engine, GpuEngine):
        return train_in_chunks(engine.key, request, reporter, sample_scorer, chunk_steps(request))
    from .training.placement import train_placed

    return train_placed(engine.manager, request, reporter, sample_scorer, placement)


def train_in_chunks(key: str, request: TrainRequest, reporter: Reporter, sample_scorer: Callable | None,
                    steps_per_call: int) -> TrainResult:
    reporter.log(f"ZeroGPU: training runs {steps_per_call} steps per GPU call, checkpointed between calls.")
    reached = None
    while True:
        try:
            reporter.check_cancel()
        except Canceled:
            if reached:
                reporter.log(f"Canceled after step {reached}; its checkpoint resumes the run.")
            raise
        chunk = replace(request, stop_after=steps_per_call, resume=request.resume or reached is not None)
        outcome = entry_points()["train_chunk"].function(key, chunk, sample_scorer)
        replay(outcome.events, reporter)
        result = outcome.unwrap()
        if result.stopped_at is None:
            return result
        if reached is not None and result.stopped_at <= reached:
            raise EngineError(f"Training made no progress past step {reached} in a GPU call.")
        reached = result.stopped_at
        reporter.log(f"ZeroGPU: step {reached}/{request.steps} checkpointed; the next GPU call continues.")


def banner_note(engine: str) -> str:
    """The line the app shows when its GPU work runs as ZeroGPU calls."""
    if engine == "replicate" or not zero_gpu_active():
        return ""
    return ("**ZeroGPU:** each image is its own GPU call; training runs a couple of minutes of steps per "
            "GPU call, checkpointed between calls, so its progress and the stop button act between calls.")


if zero_gpu_requested():
    entry_points()  # ZeroGPU looks for spaces.GPU functions while the app starts: decorate them now
