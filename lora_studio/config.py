"""Settings: one typed object built from CLI flags and environment variables.

Everything the app needs to know about the machine lives here, so the UI, services and
engines never read `os.environ` themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

ENGINES = ("tiny", "local", "replicate")
LOCAL_DEFAULT = "black-forest-labs/FLUX.2-klein-4B"  # `--engine local` without --model (engines/family/checkpoints)
REPLICATE_ENV = {  # ReplicateSettings field -> environment variable
    "destination": "LORA_STUDIO_REPLICATE_DESTINATION",
    "trainer": "LORA_STUDIO_REPLICATE_TRAINER",
    "trainer_version": "LORA_STUDIO_REPLICATE_TRAINER_VERSION",
    "kontext_model": "LORA_STUDIO_REPLICATE_KONTEXT_MODEL",
    "lora_model": "LORA_STUDIO_REPLICATE_LORA_MODEL",
    "base_url": "REPLICATE_BASE_URL",
    "parallel": "LORA_STUDIO_REPLICATE_PARALLEL",
}
REPLICATE_PARALLEL_DEFAULT, REPLICATE_PARALLEL_MAX = 8, 16  # predictions in flight together
MEMORY_MODES = ("auto", "full", "checkpointing", "offload", "8bit", "fp8", "nf4", "lowvram")  # engines/memory/plan.py says what each does
SPEED_MODES = ("auto", "off")
TRUE_WORDS = ("1", "t", "true", "yes", "on")  # what an environment switch reads as "on"; anything else is off
ZERO_GPU_ENV = "SPACES_ZERO_GPU"  # set by Hugging Face on ZeroGPU hardware (read by `spaces` too)
QUANTIZE_CHOICES = ("none", "fp8", "8bit")
GROUP_OFFLOAD_CHOICES = ("off", "encoders", "all")
SPEED_ENV = {  # SpeedRequest field -> environment variable (LORA_STUDIO_SPEED sets `mode`)
    "mode": "LORA_STUDIO_SPEED",
    "fuse_qkv": "LORA_STUDIO_FUSE_QKV",
    "compile": "LORA_STUDIO_COMPILE",
    "quantize": "LORA_STUDIO_QUANTIZE",
    "group_offload": "LORA_STUDIO_GROUP_OFFLOAD",
    "batch_edits": "LORA_STUDIO_BATCH_EDITS",
    "first_block_cache": "LORA_STUDIO_FIRST_BLOCK_CACHE",
}


def truthy(text: str | None) -> bool:
    """The one rule for a yes/no environment variable (LORA_STUDIO_SHARE=1, SPACES_ZERO_GPU=true, ...)."""
    return (text or "").strip().lower() in TRUE_WORDS


def zero_gpu_requested(env: Mapping[str, str] | None = None) -> bool:
    """Does Hugging Face say this is ZeroGPU hardware? (No GPU exists outside a `spaces.GPU` call there.)"""
    return truthy((os.environ if env is None else env).get(ZERO_GPU_ENV))


@dataclass(frozen=True)
class ReplicateSettings:
    """Model ids on Replicate. The token is read from the environment only when used, never stored."""

    kontext_model: str = "black-forest-labs/flux-kontext-dev"
    trainer: str = "ostris/flux-dev-lora-trainer"  # inputs: input_images, trigger_word, steps, lora_rank…
    trainer_version: str = ""
    lora_model: str = "black-forest-labs/flux-dev-lora"
    destination: str = ""  # owner/model that receives trained versions
    base_url: str = ""  # empty = REPLICATE_BASE_URL, else Replicate (engines.replicate.client.DEFAULT_BASE_URL)
    # Predictions in flight together (sheet, gate retries, strength sweeps). Bounded: Replicate limits how
    # fast an account may create predictions, and each one in flight holds a connection open.
    parallel: int = REPLICATE_PARALLEL_DEFAULT

    def __post_init__(self) -> None:
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) \
                or not 1 <= self.parallel <= REPLICATE_PARALLEL_MAX:
            raise ValueError(f"Replicate predictions at once (--replicate-parallel, {REPLICATE_ENV['parallel']}) "
                             f"must be a whole number from 1 to {REPLICATE_PARALLEL_MAX}, not {self.parallel!r}.")


@dataclass(frozen=True)
class SpeedRequest:
    """The speed settings asked for. None = let `auto` decide from the GPU (engines/speed/settings.py)."""

    mode: str = "auto"  # auto | off (then only the settings named here are on)
    fuse_qkv: bool | None = None
    compile: bool | None = None  # regional torch.compile; LoRAs switch by hot-swap
    quantize: str | None = None  # none | fp8 | 8bit
    group_offload: str | None = None  # off | encoders | all
    batch_edits: int | None = None  # edits per call in the character sheet (Kontext or Klein)
    first_block_cache: float | None = None  # threshold; 0 = off

    def __post_init__(self) -> None:
        if self.mode not in SPEED_MODES:
            raise ValueError(f"Unknown speed mode {self.mode!r}; choose auto or off.")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"Unknown base quantization {self.quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}.")
        if self.group_offload is not None and self.group_offload not in GROUP_OFFLOAD_CHOICES:
            raise ValueError(f"Unknown group offloading {self.group_offload!r}; "
                             f"choose one of {', '.join(GROUP_OFFLOAD_CHOICES)}.")
        if self.batch_edits is not None and not 1 <= self.batch_edits <= 8:
            raise ValueError("Sheet edits per call (--batch-edits) must be between 1 and 8.")
        if self.first_block_cache is not None and not 0 <= self.first_block_cache < 1:
            raise ValueError("The first-block cache threshold must be at least 0 (off) and below 1.")

    def explicit(self) -> dict:
        """The settings named explicitly (everything but `mode` that is not None)."""
        return {k: v for k, v in self.__dict__.items() if k != "mode" and v is not None}

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, object]) -> "SpeedRequest":
        values: dict = {}
        for name, var in SPEED_ENV.items():
            if env.get(var):
                values[name] = _typed(name, env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _typed(name: str, text: str):
    if name in ("fuse_qkv", "compile"):
        return truthy(text)
    try:
        if name == "batch_edits":
            return int(text)
        if name == "first_block_cache":
            return float(text)
    except ValueError:
        raise ValueError(f"{SPEED_ENV[name]} must be a number, not {text!r}.") from None
    return text


@dataclass(frozen=True)
class TrainPlacement:
    """Where a training runs (`--train-gpus`): in the app's process, or in worker processes.

    "app" (the default) borrows the app's loaded model: no second copy, no reload, right for one GPU.
    "isolated" is one worker process on the app's device, so a crash (out of memory, a segfault) ends
    the worker, not the app. "workers" is data-parallel worker processes, one per GPU in `gpus`
    (None = every visible GPU), or `cpu_processes` processes on the CPU (tests and benchmarks).
    """

    kind: str = "app"  # app | isolated | workers
    gpus: tuple[int, ...] | None = None
    cpu_processes: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "TrainPlacement":
        value = (text or "").strip().lower().replace(" ", "")
        if value in ("", "off", "app", "in-app", "none"):
            return cls()
        if value == "isolated":
            return cls("isolated")
        if value == "all":
            return cls("workers")
        if value.startswith("cpu:"):
            count = value.removeprefix("cpu:")
            if count.isdigit() and 1 <= int(count) <= 8:
                return cls("workers", cpu_processes=int(count))
            raise ValueError("--train-gpus cpu:N takes N from 1 to 8 (CPU worker processes, for tests).")
        parts = value.split(",")
        if all(p.isdigit() for p in parts) and len(set(parts)) == len(parts) and len(parts) <= 64:
            return cls("workers", gpus=tuple(int(p) for p in parts))
        raise ValueError(f"--train-gpus takes off, isolated, all, a list of GPU numbers such as 0,1, or cpu:N; "
                         f"not {text!r}.")

    def spec(self) -> str:
        """The text `parse` reads back (stored with a job)."""
        if self.kind != "workers":
            return "off" if self.kind == "app" else self.kind
        if self.cpu_processes:
            return f"cpu:{self.cpu_processes}"
        return "all" if self.gpus is None else ",".join(map(str, self.gpus))

    def describe(self) -> str:
        if self.kind == "app":
            return "in the app's process, on its loaded model"
        if self.kind == "isolated":
            return "in one worker process (a crash there cannot stop the app)"
        if self.cpu_processes:
            return f"data-parallel in {self.cpu_processes} CPU worker processes"
        return "data-parallel on " + ("every GPU" if self.gpus is None else
                                      f"GPU{'s' if len(self.gpus) > 1 else ''} {', '.join(map(str, self.gpus))}")


@dataclass(frozen=True)
class Settings:
    engine: str = "tiny"
    model: str | None = None  # path or hub id (FLUX.2 [klein] or FLUX.1-dev); local without one: LOCAL_DEFAULT
    kontext_model: str | None = None  # the second model: FLUX.1-Kontext-dev, or Klein's other flavour
    workspace: Path = Path("workspace")
    device: str = "auto"  # auto | cpu | cuda | mps
    memory_mode: str = "auto"
    speed: SpeedRequest = field(default_factory=SpeedRequest)  # fast generation (engines/speed/settings.py)
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[str, str] | None = None
    tasks_file: Path | None = None  # task table for Studio.generate(task=...)
    # Side of the sheet's and the tester's images (and generation's default): None = 64 on the tiny engine,
    # 1024 on the others (a script or test may ask for less, e.g. the tiny Klein served under real ids).
    sheet_size: int | None = None
    replicate: ReplicateSettings = field(default_factory=ReplicateSettings)
    space_id: str | None = None  # set on a Hugging Face Space (SPACE_ID)
    space_author: str | None = None  # the Space's owner (SPACE_AUTHOR_NAME): the one visitor who owns settings
    train_gpus: str = "off"  # where trainings run by default (TrainPlacement.parse): off | isolated | all | 0,1 | cpu:N
    # Where the engine choice came from: field -> "flag" | "environment" (absent = default). Values pinned
    # there win over the Settings page (services/setup.py), which says so next to each of them.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"Unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}.")
        if self.memory_mode not in MEMORY_MODES:
            raise ValueError(
                f"Unknown memory mode {self.memory_mode!r}; choose one of {', '.join(MEMORY_MODES)}."
            )
        TrainPlacement.parse(self.train_gpus)  # refuses a malformed --train-gpus at start-up

    @property
    def local_model(self) -> str:
        """The model the local engine loads: the one given, else FLUX.2 [klein] 4B (open, no token)."""
        return self.model or LOCAL_DEFAULT

    @property
    def train_placement(self) -> TrainPlacement:
        return TrainPlacement.parse(self.train_gpus)

    @property
    def is_tiny(self) -> bool:
        return self.engine == "tiny"

    @property
    def private_launch(self) -> bool:
        """Only this machine can reach the app: no public link, no Space, a loopback address.
        Then whoever holds the page is the owner; otherwise owner settings need a login (ui/owner.py)."""
        loopback = self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
        return loopback and not self.share and not self.space_id

    @property
    def image_size(self) -> int:
        return self.sheet_size or (64 if self.is_tiny else 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read LORA_STUDIO_* variables, then apply explicit overrides (CLI flags win)."""
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("LORA_STUDIO_MODEL"):
            values["model"] = env["LORA_STUDIO_MODEL"]
        if env.get("LORA_STUDIO_KONTEXT_MODEL"):
            values["kontext_model"] = env["LORA_STUDIO_KONTEXT_MODEL"]
        engine = env.get("LORA_STUDIO_ENGINE") or ("local" if values.get("model") else "tiny")
        values["engine"] = engine
        if env.get("LORA_STUDIO_WORKSPACE"):
            values["workspace"] = Path(env["LORA_STUDIO_WORKSPACE"])
        for key, name in (("device", "DEVICE"), ("memory_mode", "MEMORY_MODE"), ("host", "HOST"),
                          ("train_gpus", "TRAIN_GPUS")):
            if env.get(f"LORA_STUDIO_{name}"):
                values[key] = env[f"LORA_STUDIO_{name}"]
        if env.get("LORA_STUDIO_PORT"):
            values["port"] = int(env["LORA_STUDIO_PORT"])
        if env.get("LORA_STUDIO_SHARE"):
            values["share"] = truthy(env["LORA_STUDIO_SHARE"])
        if env.get("LORA_STUDIO_AUTH"):
            values["auth"] = parse_auth(env["LORA_STUDIO_AUTH"])
        if env.get("SPACE_ID"):
            values["space_id"] = env["SPACE_ID"]
            values["space_author"] = env.get("SPACE_AUTHOR_NAME") or None
        if env.get("LORA_STUDIO_TASKS"):
            values["tasks_file"] = Path(env["LORA_STUDIO_TASKS"])
        replicate = {field: env[var] for field, var in REPLICATE_ENV.items() if env.get(var)}
        parallel = overrides.pop("replicate_parallel", None)
        if parallel is not None:
            replicate["parallel"] = parallel
        if "parallel" in replicate:
            replicate["parallel"] = _whole(replicate["parallel"], REPLICATE_ENV["parallel"])
        if replicate:
            values["replicate"] = replace(ReplicateSettings(), **replicate)
        speed = overrides.pop("speed", None)
        if isinstance(speed, SpeedRequest):
            values["speed"] = speed
        else:  # flat flags: speed=auto|off, compile=…, quantize=…
            flags = {k: overrides.pop(k) for k in SPEED_ENV if k != "mode" and k in overrides}
            values["speed"] = SpeedRequest.from_env(env, {"mode": speed, **flags})
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "model" in clean and "engine" not in clean and engine == "tiny":
            clean["engine"] = "local"
        values["sources"] = choice_sources(env, clean)
        values.update(clean)
        if isinstance(values.get("workspace"), str):
            values["workspace"] = Path(values["workspace"])
        return cls(**values)


CHOICE_ENV = {"engine": "LORA_STUDIO_ENGINE", "model": "LORA_STUDIO_MODEL", "kontext_model": "LORA_STUDIO_KONTEXT_MODEL",
              "destination": "LORA_STUDIO_REPLICATE_DESTINATION"}


def choice_sources(env: Mapping[str, str], flags: Mapping[str, object]) -> dict[str, str]:
    """Which engine choices a flag or a variable set (an engine implied by a model counts as the model's)."""
    sources = {name: "environment" for name, var in CHOICE_ENV.items() if env.get(var)}
    sources.update({name: "flag" for name in CHOICE_ENV if flags.get(name) is not None})
    if "engine" not in sources and "model" in sources:
        sources["engine"] = sources["model"]
    return sources


def _whole(value: object, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}.") from None


def parse_auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must look like USER:PASS")
    return user, password
