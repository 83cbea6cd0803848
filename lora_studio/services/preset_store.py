"""Training presets: the three built-ins, the owner's shared ones and each visitor's own.

A user preset is the whole training form (steps, rank, alpha, learning rate, resolution, memory mode and
the spending cap) under a name. The owner's are kept in `presets.json` so they survive restarts and
show for everyone (the UI lets only the owner change them); a visitor on a shared link keeps theirs
in their own browser, as the list `own` holds them, checked here by the same rules whenever they
come back. Every preset passes the rule a training start applies for the running engine
(limits.training_numbers), so a saved preset always starts. Names go through the text door: built-in
and existing names are reserved in any letter case and against look-alike letters.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import Any

from ..jobs import UserError
from ..store import atomic_write_json
from ..training.presets import MAX_ALPHA_PER_RANK, PRESETS, TrainingPreset, validate_alpha
from . import limits
from .text import check_name, same_name

FILE_NAME = "presets.json"
MAX_USER_PRESETS = 50
NAME_RE = re.compile(r"^[\w][\w .()'+-]{0,39}$")
# Wide bounds for any engine, applied before a value is stored or read back (a resolution of 1e300
# would otherwise be kept as a 301-digit integer); each engine's own bounds are checked on save.
ANY_ENGINE = limits.EngineLimits("any", max_side=4096, side_multiple=1, train_resolution=(16, 4096),
                                 resolution_multiple=2, max_steps=20_000, max_rank=256, max_inference_steps=100)
MAX_CAP = 10_000.0


@dataclass(frozen=True)
class PresetFields:
    """What the training form holds, as a preset stores it."""

    steps: int
    rank: int
    learning_rate: float
    resolution: int
    memory_mode: str = "auto"
    max_usd: float = 0.0  # per-job spending cap on Replicate; 0 = none
    alpha: float | None = None  # None: the rank times the preset's alpha/rank (built-ins: alpha = rank)
    description: str = ""
    builtin: bool = False

    def form(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("description", "builtin")}

    @classmethod
    def of(cls, options) -> "PresetFields":
        """The training form's values (a TrainOptions) as a preset keeps them."""
        return cls(steps=options.steps, rank=options.rank, learning_rate=options.learning_rate,
                   resolution=options.resolution, memory_mode=options.memory_mode or "auto",
                   max_usd=options.max_usd or 0.0, alpha=options.alpha)


class PresetStore:
    """Built-in presets (read-only) and the user's presets (one JSON file, written atomically)."""

    def __init__(self, root: Path, tiny: bool, image_size: int,
                 engine_limits: limits.EngineLimits | None = None) -> None:
        self.path = Path(root) / FILE_NAME
        self.tiny, self.image_size = tiny, image_size
        self.limits = engine_limits or limits.limits_for("tiny" if tiny else "local")
        self._lock = threading.Lock()

    # ---- reading ------------------------------------------------------------------------------
    def names(self, own: Any = None) -> list[str]:
        """Built-ins first, then the owner's in the order they were first saved, then the visitor's own."""
        shared = list(PRESETS) + list(self._user())
        return shared + [key for key in self.own(own) if not same_name(key, shared)]

    def get(self, name: str, own: Any = None) -> PresetFields:
        builtin = _builtin_name(name)
        if builtin:
            preset = PRESETS[builtin]
            resolution = self.image_size if self.tiny else preset.resolution  # tiny trains at its own size
            return PresetFields(preset.steps, preset.rank, preset.learning_rate, resolution,
                                description=preset.description, builtin=True)
        presets = {**self.own(own), **self._user()}
        stored = presets.get(_match(presets, name) or "")
        if stored is None:
            raise UserError(f"Unknown preset {str(name)[:40]!r}; choose one of {', '.join(self.names(own))}.")
        return stored

    def is_builtin(self, name: str) -> bool:
        return _builtin_name(name) is not None

    def builtin(self, name: str) -> TrainingPreset | None:
        """The built-in preset of that name in any letter case (None for the user's)."""
        key = _builtin_name(name)
        return PRESETS[key] if key else None

    # ---- writing ------------------------------------------------------------------------------
    def save(self, name: str, fields: PresetFields) -> str:
        """Save (or replace) a user preset; returns its name as stored."""
        name = self._new_name(name)
        fields = self.check(fields, name)
        with self._lock:
            presets = self._user()
            existing = _match(presets, name)
            if existing is None and len(presets) >= MAX_USER_PRESETS:
                raise UserError(f"At most {MAX_USER_PRESETS} saved presets; delete one first.")
            # One preset per name in any letter case: saving "mine" over "Mine" replaces it in place.
            presets = {(name if key == existing else key): value for key, value in presets.items()}
            presets[name] = fields
            self._write(presets)
        return name

    def delete(self, name: str) -> None:
        if self.is_builtin(name):
            raise UserError(f"{name.strip()!r} is a built-in preset and cannot be deleted.")
        with self._lock:
            presets = self._user()
            if presets.pop(_match(presets, name) or "", None) is None:
                raise UserError(f"No saved preset named {name!r}.")
            self._write(presets)

    def check(self, fields: PresetFields, name: str = "") -> PresetFields:
        """The same rules a training start applies for the running engine, so a saved preset always starts."""
        fields = _typed(fields, name)
        limits.training_numbers(fields.form(), self.limits, self.tiny, self.image_size)
        limits.memory_mode(fields.memory_mode, self.limits.engine)
        if fields.alpha is not None and (errors := validate_alpha(fields.alpha, fields.rank)):
            raise UserError(" ".join(errors))
        return fields

    # ---- a visitor's own (kept in their browser; the list comes back with every request) -------
    def own(self, raw: Any) -> dict[str, PresetFields]:
        """A visitor's presets as their browser sent them, each read through the file's rules."""
        return _read(raw, MAX_USER_PRESETS)

    def save_own(self, raw: Any, name: str, fields: PresetFields) -> tuple[list[dict], str]:
        """The visitor's list with this preset saved (or replaced); nothing is written here."""
        name = self._new_name(name)
        fields = self.check(fields, name)
        if same_name(name, self._user()):
            raise UserError(f"{name!r} is a preset of this app's owner; save yours under another name.")
        presets = self.own(raw)
        existing = _match(presets, name)
        if existing is None and len(presets) >= MAX_USER_PRESETS:
            raise UserError(f"At most {MAX_USER_PRESETS} saved presets; delete one first.")
        presets = {(name if key == existing else key): value for key, value in presets.items()}
        presets[name] = fields
        return _listed(presets), name

    def delete_own(self, raw: Any, name: str) -> list[dict]:
        presets = self.own(raw)
        if presets.pop(_match(presets, name) or "", None) is None:
            raise UserError(f"No preset of yours is named {str(name)[:40]!r}.")
        return _listed(presets)

    def verify(self, raw: Any) -> None:
        """Start-up rule for presets.json: a list of presets, every one readable."""
        items = raw.get("presets") if isinstance(raw, dict) else None
        if not isinstance(items, list) or len(items) > MAX_USER_PRESETS:
            raise ValueError(f"not a list of at most {MAX_USER_PRESETS} presets")
        if len(_read(items, MAX_USER_PRESETS)) != len(items):
            raise ValueError("a preset is unreadable")

    def _new_name(self, name: str) -> str:
        name = validate_name(name)
        if self.is_builtin(name):
            raise UserError(f"{name!r} is (or looks like) a built-in preset and cannot be overwritten; "
                            "save under another name.")
        return name

    def _write(self, presets: dict[str, PresetFields]) -> None:
        # A list, not a mapping: the file keeps the order the user saved them in.
        atomic_write_json(self.path, {"presets": _listed(presets)})

    def _user(self) -> dict[str, PresetFields]:
        """The saved presets; a damaged file reads as none rather than breaking the form."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            items = raw.get("presets", {})
        except (FileNotFoundError, json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            return {}
        return _read(items, MAX_USER_PRESETS)


def _listed(presets: dict[str, PresetFields]) -> list[dict]:
    return [dict(name=k, **v.form()) for k, v in presets.items()]


def _read(items: Any, most: int) -> dict[str, PresetFields]:
    """Presets from a stored list: an entry with a bad name or values is skipped, the rest still load.
    Types and wide bounds only: the engine's own limits are checked when a training starts."""
    presets: dict[str, PresetFields] = {}
    for values in (items if isinstance(items, list) else [])[:most]:
        name = values.get("name") if isinstance(values, dict) else None
        try:
            name = validate_name(name)
        except UserError:
            continue
        if _builtin_name(name) or _match(presets, name):
            continue
        try:
            presets[name] = _typed(PresetFields(**{k: values[k] for k in values if k in _FORM_KEYS}), name)
        except (UserError, TypeError, KeyError, AttributeError):
            continue  # an entry hand-edited into nonsense is skipped
    return presets


_FORM_KEYS = ("steps", "rank", "learning_rate", "resolution", "memory_mode", "max_usd", "alpha")


def _typed(fields: PresetFields, name: str) -> PresetFields:
    """Typed and bounded for any engine, before anything is stored."""
    lim = ANY_ENGINE
    typed = PresetFields(limits.whole_number(fields.steps, "Steps", 1, lim.max_steps, 1000),
                         limits.whole_number(fields.rank, "Rank", 1, lim.max_rank, 16),
                         limits.number(fields.learning_rate, "Learning rate", 0.0, 1.0, 0.0001),
                         limits.whole_number(fields.resolution, "Resolution", *lim.train_resolution, 768),
                         limits.text(fields.memory_mode, "Memory mode", 20) or "auto",
                         limits.number(fields.max_usd or 0.0, "The spending cap", 0.0, MAX_CAP, 5),
                         None if fields.alpha in (None, "", 0) else
                         limits.number(fields.alpha, "Alpha", 0.0, MAX_ALPHA_PER_RANK * lim.max_rank, 16))
    return PresetFields(**typed.form(), description=_describe(name, typed))


def validate_name(name: Any) -> str:
    if not isinstance(name, str):
        name = ""
    name = check_name(name[:200], "A preset name", 40, example="My character 1500")
    if not NAME_RE.match(name):
        raise UserError("A preset name is 1–40 letters, digits, spaces or . ( ) ' + - _, starting with a "
                        "letter or digit.")
    return name


def _match(presets: dict, name: str) -> str | None:
    """The stored key that reads as `name`: letter case and look-alike letters aside."""
    return same_name(name or "", presets)


def _builtin_name(name: str) -> str | None:
    return same_name(name or "", PRESETS)


def _describe(name: str, fields: PresetFields) -> str:
    alpha = f", alpha {fields.alpha:g}" if fields.alpha is not None else ""
    text = (f"Your preset{f' {name}' if name else ''}: {fields.steps} steps, rank {fields.rank}{alpha}, "
            f"learning rate {fields.learning_rate:g}, {fields.resolution} px, memory mode {fields.memory_mode}")
    return text + (f", cap ${fields.max_usd:g}." if fields.max_usd else ".")
