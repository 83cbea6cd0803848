"""What each kind of job keeps as its parameters in the store: one typed dataclass per kind.

A service builds its kind's dataclass when a job is submitted, checks it (services/limits.py), and
the queue stores it with `typed_json.to_json`. When the job runs, perhaps after a restart or queued by
an older version, the queue reads the record back with `typed_json.from_json` (JobQueue.register's
`params`): a missing field or a wrong type fails the job with a sentence naming the field, and the
service then checks the values again against what this engine serves.

Stored records stay readable: a field added later has a default (what older versions did without it),
and fields a record holds that are no longer used are ignored. tests/test_job_params.py reads records
in every older shape.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainParams:
    """A training ("train"): the dataset, the LoRA's name and trigger, and the resolved hyperparameters."""

    dataset_id: str
    name: str
    trigger: str
    steps: int
    rank: int
    learning_rate: float
    resolution: int
    alpha: float | None = None  # older versions trained at alpha = rank
    train_mlp: bool = True
    memory_mode: str | None = None  # None: "auto"
    checkpoint_every: int | None = None  # None: every quarter of the steps
    sample_every: int | None = None
    max_usd: float | None = None  # spending cap on Replicate; None or 0 = none
    seed: int = 0
    train_on: str | None = None  # TrainPlacement spec; None: the app's default
    batch_size: int | None = None  # fixed at the first run (TrainingService._placement); None: not yet
    estimate: dict | None = None  # the expected Replicate cost (costs.Estimate.to_dict), for the page


@dataclass(frozen=True)
class GenerateParams:
    """One text-to-image generation ("generate"); `loras` are (library id, strength) pairs."""

    prompt: str
    width: int | None = None  # None: the model family's default (services/generate.py family_defaults)
    height: int | None = None
    loras: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    go_fast: bool = False


@dataclass(frozen=True)
class SweepParams:
    """A strength test ("sweep"): one LoRA at several strengths and seeds, others held at a fixed weight."""

    lora_id: str
    prompt: str
    strengths: tuple[float, ...]
    seeds: tuple[int, ...]
    extra: tuple[tuple[str, float], ...] = ()  # (library id, weight)
    include_base: bool = True
    steps: int | None = None  # None: each checkpoint's own (FLUX.1 28, Klein distilled 4, Klein base 50)
    max_usd: float | None = None
    go_fast: bool = False  # always off (engines.base.GO_FAST_LORA_FACTOR): kept so the record says so
    estimate: dict | None = None
    checkpoints: tuple[str, ...] = ()  # FLUX.2 [klein]: ("distilled", "base") sweeps both; (): the pictures one


@dataclass(frozen=True)
class SheetParams:
    """A character sheet ("sheet"): the variations of one character's reference (Kontext or Klein edits)."""

    character_id: str
    gate: bool = True
    max_tries: int = 3
    max_distance: float = 0.6
    steps: int | None = None  # None: the engine family's sheet steps (Kontext 28, Klein distilled 4, base 50)
    slots: tuple[int, ...] | None = None  # None: all 30
    max_usd: float | None = None
    estimate: dict | None = None


@dataclass(frozen=True)
class DownloadParams:
    """A model download ("download"), pinned to the commit listed when it was queued."""

    repo_id: str
    commit: str | None = None
    transformer_only: bool | None = None
    total: int = 0  # bytes the pipeline needs from the repo
    layout: str = "diffusers"  # "diffusers": a pipeline's folders; "transformers": a captioner's files
    then_use: str | None = None  # the model the app switches to once this download is done (first-run offer)


@dataclass(frozen=True)
class CaptionParams:
    """A caption job ("caption"): a character's sheet images, or a dataset's photos that came without a
    caption; `model` is the captioner chosen when it was queued ("built in": the tiny random one)."""

    model: str
    character_id: str | None = None
    image_ids: tuple[str, ...] = ()
    keep_edited: bool = True  # captions the user edited stay
    dataset_id: str | None = None  # set instead of the character for `train FOLDER --caption`


@dataclass(frozen=True)
class PublishParams:
    """A publish to the Hub ("publish"): one library LoRA to one repo."""

    lora_id: str
    repo_id: str
    private: bool = True  # a new repo's visibility; an existing one keeps its own


@dataclass(frozen=True)
class HubImportParams:
    """A community LoRA fetched from the Hub and imported ("lora_download"), pinned to the listed commit."""

    repo_id: str
    commit: str
    path: str
    size: int
    name: str
    trigger: str = ""  # "": the repo card's instance_prompt, if any
    card_size: int | None = None  # the repo's README.md, fetched for its trigger word; None: none to read


__all__ = ["CaptionParams", "DownloadParams", "GenerateParams", "HubImportParams", "PublishParams", "SheetParams",
           "SweepParams", "TrainParams"]
