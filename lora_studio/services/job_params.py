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
    width: int
    height: int
    loras: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    steps: int = 28
    guidance: float = 3.5
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
    steps: int = 28
    max_usd: float | None = None
    go_fast: bool = False  # always off (engines.base.GO_FAST_LORA_FACTOR): kept so the record says so
    estimate: dict | None = None


@dataclass(frozen=True)
class SheetParams:
    """A character sheet ("sheet"): the Kontext variations of one character's reference."""

    character_id: str
    gate: bool = True
    max_tries: int = 3
    max_distance: float = 0.6
    steps: int = 28
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


__all__ = ["DownloadParams", "GenerateParams", "SheetParams", "SweepParams", "TrainParams"]
