"""Remembered settings: the user's last choices, so a restart opens the app where they left it.

Only engine-independent choices are kept (the character, the tester's prompt, strengths and seeds,
the training form), each under a known key with its own type and bound. On a private launch they
live in `preferences.json` in the workspace (written atomically on every change, read on page load);
on a shared link each visitor's live in their own browser (ui/remembered.py) and pass the same
`clean` rules whenever they come back. Every text goes through the one door (services/text.py), so a
remembered value can always be served back. A damaged file reads as "nothing remembered" and is set
aside at the next start (`verify`).
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Callable

from ..store import atomic_write_json
from .limits import MAX_PROMPT
from .text import check_text

FILE_NAME = "preferences.json"
MAX_TEXT = MAX_PROMPT  # the longest remembered text is a prompt
MAX_ENTRIES = 64


def _text(value: Any) -> str:
    return check_text(value, "A remembered text", MAX_TEXT)


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(value)
        return number

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


KEYS: dict[str, Callable[[Any], Any]] = {
    "character": _text,
    "sheet.gate": _flag,
    "sheet.tries": _number(1, 10),
    "sheet.max_usd": _number(0, 10_000),
    "training.preset": _text,
    "training.steps": _number(0, 20_000),
    "training.rank": _number(0, 256),
    "training.learning_rate": _number(0, 1),
    "training.resolution": _number(0, 4096),
    "training.memory_mode": _text,
    "training.max_usd": _number(0, 10_000),
    "training.alpha": _number(0, 1024),
    "training.train_on": _text,
    "tester.lora": _text,
    "tester.prompt": _text,
    "tester.strengths": _text,
    "tester.seeds": _text,
    "tester.extra": _text,
    "tester.max_usd": _number(0, 10_000),
    "generate.prompt": _text,
    "generate.go_fast": _flag,
}


class Preferences:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILE_NAME
        self._lock = threading.Lock()

    def all(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return clean(raw)

    def get(self, key: str, default: Any = None) -> Any:
        return self.all().get(key, default)

    def set(self, key: str, value: Any) -> bool:
        """Remember one choice; False (and nothing written) for an unknown key or a bad value."""
        value = checked(key, value)
        if value is None:
            return False
        with self._lock:
            current = self.all()
            if current.get(key) == value:
                return True
            current[key] = value
            atomic_write_json(self.path, current)
        return True


def checked(key: str, value: Any) -> Any:
    """The value as it may be remembered, or None when the key is unknown or the value out of bounds."""
    if value is None:
        return None
    try:
        return KEYS[key](value)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def clean(raw: Any) -> dict[str, Any]:
    """Only known keys with values in bounds; a visitor's browser or a hand-edited file is not trusted."""
    if not isinstance(raw, dict):
        return {}
    kept = {}
    for key, value in list(raw.items())[:MAX_ENTRIES * 4]:
        value = checked(key, value) if isinstance(key, str) else None
        if value is not None:
            kept[key] = value
    return kept


def verify(raw: Any) -> None:
    """Start-up rule for preferences.json: a mapping whose known keys all hold values in bounds."""
    if not isinstance(raw, dict):
        raise ValueError("not a mapping of choices")
    bad = [key for key, value in raw.items() if key in KEYS and checked(key, value) is None]
    if bad:
        raise ValueError(f"unusable value for {', '.join(bad[:3])}")
