"""Training presets: the three built-ins plus the user's own, saved in the workspace.

A user preset is the whole training form (steps, rank, alpha, learning rate, resolution, memory mode
and the spending cap) under a name, kept in `presets.json` so it survives restarts. Built-in names are
reserved in any letter case: a user can neither overwrite nor delete Beginner, Standard or Expert.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import MEMORY_MODES
from ..jobs import UserError
from ..store import atomic_write_json
from ..training.presets import PRESETS, TrainingPreset, validate_alpha, validate_hyperparameters

FILE_NAME = "presets.json"
MAX_USER_PRESETS = 50
NAME_RE = re.compile(r"^[\w][\w .()'+-]{0,39}$")


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


class PresetStore:
    """Built-in presets (read-only) and the user's presets (one JSON file, written atomically)."""

    def __init__(self, root: Path, tiny: bool, image_size: int) -> None:
        self.path = Path(root) / FILE_NAME
        self.tiny, self.image_size = tiny, image_size
        self._lock = threading.Lock()

    # ---- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Built-ins first, then the user's in the order they were first saved."""
        return list(PRESETS) + list(self._user())

    def get(self, name: str) -> PresetFields:
        builtin = _builtin_name(name)
        if builtin:
            preset = PRESETS[builtin]
            resolution = self.image_size if self.tiny else preset.resolution  # tiny trains at its own size
            return PresetFields(preset.steps, preset.rank, preset.learning_rate, resolution,
                                description=preset.description, builtin=True)
        presets = self._user()
        stored = presets.get(_match(presets, name) or "")
        if stored is None:
            raise UserError(f"Unknown preset {name!r}; choose one of {', '.join(self.names())}.")
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
        name = validate_name(name)
        if self.is_builtin(name):
            raise UserError(f"{name!r} is a built-in preset and cannot be overwritten; save under another name.")
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
        """The same rules a training start applies, so a saved preset always starts."""
        fields = _typed(fields, name)
        errors = validate_hyperparameters(fields.steps, fields.rank, fields.learning_rate, fields.resolution,
                                          tiny=self.tiny)
        if fields.alpha is not None:
            errors += validate_alpha(fields.alpha, fields.rank)
        if fields.memory_mode not in MEMORY_MODES:
            errors.append(f"Memory mode must be one of {', '.join(MEMORY_MODES)}.")
        if not 0.0 <= fields.max_usd <= 10_000:
            errors.append("The spending cap must be between $0 (no cap) and $10,000.")
        if errors:
            raise UserError(" ".join(errors))
        return fields

    def _write(self, presets: dict[str, PresetFields]) -> None:
        # A list, not a mapping: the file keeps the order the user saved them in.
        atomic_write_json(self.path, {"presets": [dict(name=k, **v.form()) for k, v in presets.items()]})

    def _user(self) -> dict[str, PresetFields]:
        """The saved presets; a damaged file reads as none rather than breaking the form."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            items = raw.get("presets", {})
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            return {}
        presets = {}
        for values in items if isinstance(items, list) else ():
            name = values.get("name") if isinstance(values, dict) else None
            if not isinstance(name, str) or not NAME_RE.match(name) or self.is_builtin(name) or _match(presets, name):
                continue
            try:  # types only: the engine's own limits are checked when a training starts
                presets[name] = _typed(PresetFields(**{k: values[k] for k in values if k in _FORM_KEYS}), name)
            except (UserError, TypeError, KeyError, AttributeError):
                continue  # an entry hand-edited into nonsense is skipped, the rest still load
        return presets


_FORM_KEYS = ("steps", "rank", "learning_rate", "resolution", "memory_mode", "max_usd", "alpha")


def _typed(fields: PresetFields, name: str) -> PresetFields:
    try:
        typed = PresetFields(int(fields.steps), int(fields.rank), float(fields.learning_rate),
                             int(fields.resolution), str(fields.memory_mode or "auto"), float(fields.max_usd or 0.0),
                             None if fields.alpha in (None, "", 0) else float(fields.alpha))
    except (TypeError, ValueError, OverflowError):
        raise UserError("Steps, rank and resolution must be whole numbers; learning rate and alpha numbers.") from None
    return PresetFields(**typed.form(), description=_describe(name, typed))


def validate_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not NAME_RE.match(name):
        raise UserError("A preset name is 1–40 letters, digits, spaces or . ( ) ' + - _, starting with a "
                        "letter or digit.")
    return name


def _match(presets: dict, name: str) -> str | None:
    wanted = " ".join((name or "").split()).lower()
    return next((key for key in presets if key.lower() == wanted), None)


def _builtin_name(name: str) -> str | None:
    wanted = " ".join((name or "").split()).lower()
    return next((key for key in PRESETS if key.lower() == wanted), None)


def _describe(name: str, fields: PresetFields) -> str:
    alpha = f", alpha {fields.alpha:g}" if fields.alpha is not None else ""
    text = (f"Your preset{f' {name}' if name else ''}: {fields.steps} steps, rank {fields.rank}{alpha}, "
            f"learning rate {fields.learning_rate:g}, {fields.resolution} px, memory mode {fields.memory_mode}")
    return text + (f", cap ${fields.max_usd:g}." if fields.max_usd else ".")
