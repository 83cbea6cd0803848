"""Remembered settings: the user's last choices, so a restart opens the app where they left it.

Only engine-independent choices are kept (the character, the tester's prompt, strengths and seeds,
the training form), each under a known key with its own type and bound, in `preferences.json` in
the workspace. Writes are atomic and happen on every change; reads happen on page load. A damaged
file reads as "nothing remembered".
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Callable

from ..store import atomic_write_json

FILE_NAME = "preferences.json"
MAX_TEXT = 500


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT]


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
        if not isinstance(raw, dict):
            return {}
        clean = {}
        for key, value in raw.items():
            try:
                clean[key] = KEYS[key](value)
            except (KeyError, TypeError, ValueError):
                continue  # unknown or out-of-bounds values are forgotten, not trusted
        return clean

    def get(self, key: str, default: Any = None) -> Any:
        return self.all().get(key, default)

    def set(self, key: str, value: Any) -> bool:
        """Remember one choice; False (and nothing written) for an unknown key or a bad value."""
        if value is None:
            return False
        try:
            value = KEYS[key](value)
        except (KeyError, TypeError, ValueError):
            return False
        with self._lock:
            current = self.all()
            if current.get(key) == value:
                return True
            current[key] = value
            atomic_write_json(self.path, current)
        return True
