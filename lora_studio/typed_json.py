"""Dataclasses to JSON and back, every value checked against its field's annotation on the way in.

A job's parameters live in the store for as long as the job does (a restart, a resume weeks later, a
newer version of the app), and a worker process gets its TrainRequest and sends back its TrainResult
as JSON files. Each is written with `to_json` and read with `from_json(cls, data, what)`: a field
that is missing without a default, or holds the wrong type (a record from another version, or edited
by hand), is a `DamagedRecord` that names the field in a sentence, not a KeyError deep inside the
work. Keys the class does not know are ignored: an older version's leftovers, a newer one's additions.

Annotations understood: str, int, float (an int is a float), bool, Path (stored as text), None,
unions (`X | None`), list[X], tuple[X, ...], tuple[X, Y], dict[str, X], dict, Any/object (any JSON
value) and nested dataclasses. Imports nothing of the app's, so every layer can use it.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import StudioError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class DamagedRecord(StudioError):
    """Stored JSON that does not fit the type it is read as; the message says which field and how."""


def to_json(value: Any) -> Any:
    """A dataclass (or any value made of them, paths, tuples and dicts) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    return value


def from_json(cls: type[T], data: Any, what: str = "This record") -> T:
    """`cls` rebuilt from `to_json`'s output; DamagedRecord in words when `data` does not fit it."""
    return _dataclass(cls, data, _Where(what, ""))


def from_json_or_none(cls: type[T], data: Any) -> T | None:
    """The same, or None for data that does not fit (for listings, where a damaged record is skipped)."""
    try:
        return from_json(cls, data)
    except DamagedRecord:
        return None


@dataclasses.dataclass(frozen=True)
class _Where:
    what: str  # the record, e.g. "This job's saved settings"
    field: str  # the dotted path to the value being read

    def at(self, name: str | int) -> "_Where":
        part = f"[{name}]" if isinstance(name, int) else (f".{name}" if self.field else name)
        return _Where(self.what, self.field + part)

    def refuse(self, problem: str) -> DamagedRecord:
        where = f"{self.field} {problem}" if self.field else problem
        return DamagedRecord(f"{self.what} cannot be read: {where} (it was saved by another version of the "
                             "app, or damaged).")


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass(cls: type, data: Any, where: _Where):
    if not isinstance(data, Mapping):
        raise where.refuse(f"should be a table of values, not {_shown(data)}")
    hints, values = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], where.at(f.name))
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise where.at(f.name).refuse("is missing") if where.field else where.refuse(f"it has no {f.name}")
    return cls(**values)


_SCALARS = {str: "text", bool: "true or false", int: "a whole number", float: "a number"}


def _value(hint: Any, value: Any, where: _Where):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _value(option, value, where)
            except DamagedRecord as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        raise where.refuse(f"holds {_shown(value)}, which fits none of its types")
    if hint is type(None):
        if value is not None:
            raise where.refuse(f"should be empty, not {_shown(value)}")
        return None
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, where)
    if hint is Path:
        if isinstance(value, str):
            return Path(value)
        raise where.refuse(f"should be a file path, not {_shown(value)}")
    if hint in _SCALARS:
        wanted = (int, float) if hint is float else hint
        if isinstance(value, wanted) and (hint is bool or not isinstance(value, bool)):
            return value
        raise where.refuse(f"should be {_SCALARS[hint]}, not {_shown(value)}")
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise where.refuse(f"should be a list, not {_shown(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple, e.g. (name, weight)
            if len(value) != len(args):
                raise where.refuse(f"should hold {len(args)} values, not {len(value)}")
            return tuple(_value(a, v, where.at(i)) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_value(item, v, where.at(i)) for i, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise where.refuse(f"should be a table of values, not {_shown(value)}")
        item = args[1] if args else Any
        return {str(k): _value(item, v, where.at(str(k))) for k, v in value.items()}
    raise TypeError(f"typed_json cannot read the annotation {hint!r}")  # a programming error, not a record's


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "…" + text[-1]


__all__ = ["DamagedRecord", "from_json", "from_json_or_none", "to_json"]
