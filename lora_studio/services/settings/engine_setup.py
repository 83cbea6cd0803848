"""The engine and models chosen in the Settings page, remembered in `workspace/setup.json`.

Flags and LORA_STUDIO_* variables still win: the page fills only what they left at the default,
and says for each value where it came from (flag / environment / page / default). The file is read
defensively: one that is no JSON object (cut short, nested 100 000 deep) is set aside at start-up
like the other settings files (Studio), and a hand-edited value that cannot be used is ignored with
a note, never a reason not to start.
Every value is checked here before it is saved or used (a stranger may call the endpoint).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ...config import ENGINES, Settings
from ...engines.hub import is_repo_id
from ...engines.family import KLEIN, KLEIN_4B
from ...engines.local import BUILT_IN, DEV_HUB_ID, KONTEXT_CLASS, KONTEXT_HUB_ID, model_flavour, pipeline_class
from ...errors import InvalidInput
from ...store import atomic_write_json

FILE_NAME = "setup.json"
FIELDS = ("engine", "model", "kontext_model", "destination")
LABELS = {"engine": "Engine", "model": "Model", "kontext_model": "Second model (FLUX.1 Kontext, or Klein's other flavour)",
          "destination": "Replicate destination"}
FLAG_NAMES = {"engine": "--engine", "model": "--model", "kontext_model": "--kontext-model",
              "destination": "LORA_STUDIO_REPLICATE_DESTINATION"}
ENV_NAMES = {"engine": "LORA_STUDIO_ENGINE", "model": "LORA_STUDIO_MODEL",
             "kontext_model": "LORA_STUDIO_KONTEXT_MODEL", "destination": "LORA_STUDIO_REPLICATE_DESTINATION"}
MAX_MODEL = 500
DESTINATION = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}/[a-z0-9][a-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class EngineChoice:
    """What the page asks for. Empty model fields mean "none" (the tiny engine needs neither)."""

    engine: str = "tiny"
    model: str = ""
    kontext_model: str = ""
    destination: str = ""

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class SetupRow:
    name: str
    value: str
    source: str  # flag | environment | page | default

    def describe(self) -> str:
        where = {"flag": f"set by {FLAG_NAMES[self.name]} at launch",
                 "environment": f"set by {ENV_NAMES[self.name]}", "page": "chosen here",
                 "default": "default"}[self.source]
        return f"{LABELS[self.name]}: {self.value or '—'} ({where})"


class SetupService:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILE_NAME
        self.note = ""  # why a saved file was ignored at start, for the page

    # ---- the file -----------------------------------------------------------------------------
    def saved(self) -> EngineChoice | None:
        """The page's last choice, or None (no file; or a damaged one, with `note` saying so)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return check(EngineChoice(**{k: str(raw.get(k) or "") for k in FIELDS}), need_models=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            self.note = f"The saved engine choice ({FILE_NAME}) was ignored: {exc}"
            return None

    @staticmethod
    def verify(raw) -> None:
        """What a readable setup.json must be, checked at start-up (store.recover_json sets aside a file
        that fails); a value that is well-formed but unusable here (a folder gone) is only ignored."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        for name in FIELDS:
            if raw.get(name) is not None and not isinstance(raw[name], str):
                raise ValueError(f"its {name} is not text")

    def remember(self, settings: Settings, choice: EngineChoice) -> None:
        """Save the page's choice; a value pinned by a flag or variable keeps what the page saved before,
        so it is not taken for the page's own choice once the flag is gone."""
        before = self.saved() or EngineChoice()
        kept = {name: getattr(before, name) for name in explicit(settings)}
        atomic_write_json(self.path, replace(choice, **kept).as_dict())

    def choice(self, settings: Settings) -> EngineChoice:
        """The current values as a choice (the page's form starts from it)."""
        return EngineChoice(settings.engine, settings.model or "", settings.kontext_model or "",
                            settings.replicate.destination)

    # ---- merging with flags and environment -------------------------------------------------
    def apply(self, settings: Settings, choice: EngineChoice | None = None) -> Settings:
        """Settings with the page's choice filled in wherever no flag or variable pinned a value."""
        choice = choice if choice is not None else self.saved()
        if choice is None:
            return settings
        pinned = explicit(settings)
        values: dict = {}
        for name in ("engine", "model", "kontext_model"):
            if name not in pinned:
                values[name] = getattr(choice, name) or None
        sources = {**{k: "page" for k in values if getattr(choice, k)}, **pinned}
        replicate = settings.replicate
        if "destination" not in pinned and choice.destination:
            replicate = replace(replicate, destination=choice.destination)
            sources["destination"] = "page"
        merged = {**{k: getattr(settings, k) for k in ("engine", "model", "kontext_model")}, **values}
        if merged["engine"] == "local" and not merged["model"]:
            return settings  # a page choice that cannot run here (e.g. its model came from a flag now gone)
        return replace(settings, **values, replicate=replicate, sources=sources)

    def rows(self, settings: Settings) -> list[SetupRow]:
        values, pinned = current_values(settings), explicit(settings)
        return [SetupRow(name, values[name], pinned.get(name) or settings.sources.get(name, "default"))
                for name in FIELDS]

    def pinned_conflict(self, settings: Settings, choice: EngineChoice) -> str:
        """A sentence when the page asks to change a value a flag or variable pinned ('' when none)."""
        for row in self.rows(settings):
            asked = getattr(choice, row.name)
            if row.source in ("flag", "environment") and asked and asked != row.value:
                return (f"{LABELS[row.name]} is {row.describe().split(': ', 1)[1]}: flags and environment variables "
                        "win over this page. Start the app without it to choose here.")
        return ""


def current_values(settings: Settings) -> dict[str, str]:
    return {"engine": settings.engine, "model": settings.model or "", "kontext_model": settings.kontext_model or "",
            "destination": settings.replicate.destination}


def explicit(settings: Settings) -> dict[str, str]:
    """The values the page may not change: set by a flag or variable, or given in code (`Settings(model=…)`
    from a script differs from the default without a recorded source: it counts as a flag)."""
    pinned = {k: v for k, v in settings.sources.items() if v in ("flag", "environment")}
    defaults = current_values(Settings())
    for name, value in current_values(settings).items():
        if name not in settings.sources and value != defaults[name]:
            pinned[name] = "flag"
    if "model" in pinned and "engine" not in pinned and "engine" not in settings.sources:
        pinned["engine"] = pinned["model"]  # the engine a given model implies
    return pinned


def check(choice: EngineChoice, need_models: bool = True) -> EngineChoice:
    """Bounded, well-formed values; with `need_models`, the models are what they claim to be."""
    engine = (choice.engine or "").strip().lower()
    if engine not in ENGINES:
        raise InvalidInput(f"Choose the engine: {', '.join(ENGINES)}.")
    model, kontext = _model_ref(choice.model, "model"), _model_ref(choice.kontext_model, "second model")
    destination = (choice.destination or "").strip()
    if destination and not DESTINATION.match(destination):
        raise InvalidInput("The Replicate destination is owner/name, in lowercase letters, digits, '-', '_' or '.'.")
    if need_models and engine == "local":
        if not model:
            raise InvalidInput(f"The local engine needs a FLUX.1-dev model or a FLUX.2 [klein] one: a local folder or a "
                               f"hub id such as {KLEIN_4B} (open, no token needed) or {DEV_HUB_ID}.")
        if pipeline_class(model) == KONTEXT_CLASS:
            raise InvalidInput(f"{model} is FLUX.1 Kontext: put it in the Kontext field and choose {DEV_HUB_ID} "
                               "(or its folder) as the FLUX.1-dev model.")
        own = model_flavour(model)
        if kontext and own is not None and own.family is KLEIN:
            second = model_flavour(kontext)
            if second is not None and (second.family is not KLEIN or second.distilled == own.distilled):
                other = "base" if own.distilled else "distilled"
                raise InvalidInput(f"{kontext} is {second.describe()}; beside {model} the second model is FLUX.2 "
                                   f"[klein]'s {other} checkpoint (leave it blank to use the one on disk).")
            return EngineChoice(engine, model, kontext, destination)
        kind = pipeline_class(kontext) if kontext else None
        if kontext and kind is not None and kind != KONTEXT_CLASS:
            raise InvalidInput(f"{kontext} is not a FLUX.1 Kontext model (its model_index.json names {kind}); "
                               f"download {KONTEXT_HUB_ID} in Settings → Models.")
    return EngineChoice(engine, model, kontext, destination)


def _model_ref(value: str, what: str) -> str:
    """A hub id (owner/name) or an absolute folder holding model_index.json (or the Kontext transformer)."""
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > MAX_MODEL or not value.isprintable():
        raise InvalidInput(f"The {what} is a hub id (owner/name) or a folder path, up to {MAX_MODEL} characters.")
    if (is_repo_id(value) or value in BUILT_IN) and not Path(value).is_dir():  # a hub id, or a test model built in code
        return value
    folder = Path(value).expanduser()
    if not folder.is_absolute():
        raise InvalidInput(f"The {what} {value!r} is neither a hub id (owner/name) nor an absolute folder path.")
    if not (folder / "model_index.json").is_file():
        raise InvalidInput(f"The folder for the {what} has no model_index.json: give the folder of a model in "
                           "diffusers layout (the one holding model_index.json).")
    return str(folder)


__all__ = ["ENGINES", "EngineChoice", "SetupRow", "SetupService", "check"]
