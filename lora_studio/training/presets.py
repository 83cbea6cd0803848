"""Training presets and hyper-parameter checks, as small typed values.

Three presets cover what people ask for when they train a character LoRA on FLUX.1-dev from 20-30
images:

- **Beginner** - 1000 steps, rank 16, lr 1e-4, 512 px. 512 px trains about twice as fast as 768 px
  and is enough to learn a face; rank 16 holds one identity comfortably; lr 1e-4 is the usual
  AdamW rate for Flux LoRAs and forgives a small or uneven data set.
- **Standard** - 1500 steps, rank 16, lr 1e-4, 768 px. More steps and more pixels pick up hair,
  skin and clothing detail at the cost of roughly 2x the time of Beginner.
- **Expert** - 2000 steps, rank 32, lr 8e-5, 1024 px. Full-resolution buckets and twice the rank
  for fine detail; the lower learning rate and the identity check at every sample keep the longer
  run from freezing the face (the best checkpoint is kept).

Alpha equals the rank in every preset (LoRA scale 1.0), so the learning rate means the same thing
across ranks. The alpha rule: alpha is what the user gives, else the rank times the preset's
alpha/rank ratio (`TrainingPreset.alpha_for`). Changing only the rank therefore keeps the scale
alpha/rank, and with it how strongly the LoRA acts; the exported files carry that scale folded into
their weights (training/outputs.py), so it reads the same in every tool.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..engines.base import TrainRequest


@dataclass(frozen=True)
class TrainingPreset:
    name: str
    steps: int
    rank: int
    alpha: float
    learning_rate: float
    resolution: int
    train_mlp: bool
    description: str

    def alpha_for(self, rank: int) -> float:
        """The alpha this preset gives a LoRA of `rank`: its alpha/rank ratio kept, so the scale is too."""
        return float(rank) * self.alpha / self.rank

    def request_fields(self) -> dict:
        """The TrainRequest fields this preset sets."""
        return dict(
            steps=self.steps,
            rank=self.rank,
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            resolution=self.resolution,
            train_mlp=self.train_mlp,
        )


PRESETS: dict[str, TrainingPreset] = {
    preset.name: preset
    for preset in (
        TrainingPreset(
            name="Beginner",
            steps=1000,
            rank=16,
            alpha=16.0,
            learning_rate=1e-4,
            resolution=512,
            train_mlp=True,
            description="Fast and forgiving: 512 px, rank 16. A good first LoRA in about half the time.",
        ),
        TrainingPreset(
            name="Standard",
            steps=1500,
            rank=16,
            alpha=16.0,
            learning_rate=1e-4,
            resolution=768,
            train_mlp=True,
            description="Balanced: 768 px picks up hair and skin detail; about twice the time of Beginner.",
        ),
        TrainingPreset(
            name="Expert",
            steps=2000,
            rank=32,
            alpha=32.0,
            learning_rate=8e-5,
            resolution=1024,
            train_mlp=True,
            description="Full detail: 1024 px, rank 32, a gentler learning rate for the longer run.",
        ),
    )
}

DEFAULT_PRESET = "Standard"

_TRAIN_REQUEST_FIELDS = {f.name for f in dataclasses.fields(TrainRequest)}


def get_preset(name: str) -> TrainingPreset:
    for key, preset in PRESETS.items():
        if key.lower() == name.strip().lower():
            return preset
    raise KeyError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")


def preset_request(name: str, **overrides) -> dict:
    """TrainRequest keyword arguments for a preset, with `overrides` applied on top.

    Example: ``TrainRequest(**preset_request("Beginner", dataset_dir=..., output_dir=..., work_dir=...,
    trigger="ohwx"))``.
    """
    unknown = sorted(set(overrides) - _TRAIN_REQUEST_FIELDS)
    if unknown:
        raise TypeError(f"Not TrainRequest fields: {', '.join(unknown)}.")
    fields = get_preset(name).request_fields()
    fields.update(overrides)
    return fields


MAX_ALPHA_PER_RANK = 4  # alpha up to 4x the rank (scale 4); the usual alpha is the rank (scale 1)


def validate_alpha(alpha, rank: int) -> list[str]:
    """Plain-language problems with this alpha for this rank; empty when it is fine."""
    try:
        ok = 0.0 < float(alpha) <= MAX_ALPHA_PER_RANK * int(rank)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if ok:
        return []
    return [f"Alpha must be above 0 and at most {MAX_ALPHA_PER_RANK} x the rank (scale alpha/rank up to "
            f"{MAX_ALPHA_PER_RANK}); the usual alpha is the rank itself."]


def validate_hyperparameters(steps: int, rank: int, lr: float, resolution: int, *, tiny: bool = False) -> list[str]:
    """Plain-language problems with these settings; an empty list means they are fine.

    `tiny=True` (the tiny CPU engine) accepts any even resolution of 16 px or more.
    """
    errors: list[str] = []
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 20000:
        errors.append("Steps must be a whole number from 1 to 20000.")
    if (
        not isinstance(rank, int)
        or isinstance(rank, bool)
        or not 1 <= rank <= 256
        or rank & (rank - 1) != 0
    ):
        errors.append("Rank must be a power of two from 1 to 256 (1, 2, 4, ... 256).")
    try:
        lr_ok = 0.0 < float(lr) <= 1e-2
    except (TypeError, ValueError):
        lr_ok = False
    if not lr_ok:
        errors.append("Learning rate must be above 0 and at most 0.01 (typical: 0.0001).")
    if not isinstance(resolution, int) or isinstance(resolution, bool):
        errors.append("Resolution must be a whole number of pixels.")
    elif tiny:
        if resolution < 16 or resolution % 2:
            errors.append("Resolution must be an even number of pixels, 16 or more, on the tiny engine.")
    elif not 256 <= resolution <= 2048 or resolution % 64:
        errors.append("Resolution must be from 256 to 2048 pixels and a multiple of 64 (e.g. 512, 768, 1024).")
    return errors
