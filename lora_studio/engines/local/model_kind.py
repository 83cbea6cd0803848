"""What kind of Flux model a folder or hub id holds, read from its model_index.json (no torch).

FLUX.1-dev and FLUX.1-Kontext-dev share an architecture and differ by weights: only the
`_class_name` in model_index.json tells them apart (FluxPipeline / FluxKontextPipeline), never the
name a user gave the folder. The setup page checks a choice with this before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..family import KONTEXT_CLASS, model_index

TINY_ID = "tiny-flux"
WIDE_ID = "wide-flux"  # FLUX.1-dev widths, one block of each kind (engines/builtin/wide.py): tests, benches
RANDOM_WEIGHTS = (TINY_ID, WIDE_ID)  # built in code: one transformer serves text and sheet
KONTEXT_HUB_ID = "black-forest-labs/FLUX.1-Kontext-dev"
DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"
NEEDS_KONTEXT = (
    "The character sheet needs FLUX.1 Kontext, and {model} is not a Kontext model (its model_index.json "
    "names {cls}): FLUX.1-dev was never trained to edit an image. Download {kontext} in Settings → Models "
    "and choose it as the Kontext model in Settings → Engine (or start with --kontext-model)."
)
NEEDS_DEV = (
    "{model} is FLUX.1 Kontext, an image editor: text-to-image and training need FLUX.1-dev. Choose "
    "{dev} as the dev model in Settings → Engine (or --model) and keep {model} as the Kontext model."
)


def model_label(model_id: str | None) -> str:
    """A model as a page may name it: a hub id as it is, a folder by its last name only ("your model folder
    FLUX.1-dev"), never the server path that holds it (the banner is served to anyone with the link)."""
    text = str(model_id or "")
    if text and (Path(text).expanduser().is_absolute() or Path(text).expanduser().is_dir()):
        return f"your model folder {Path(text).name or text}"
    return text


def pipeline_class(model_id: str) -> str | None:
    """The `_class_name` in a folder's or a cached hub repo's model_index.json; None when unknown."""
    value = (model_index(model_id) or {}).get("_class_name")
    return value if isinstance(value, str) else None


def is_kontext(model_id: str) -> bool:
    return pipeline_class(model_id) == KONTEXT_CLASS


@dataclass(frozen=True)
class KontextChoice:
    """Which transformer each job runs: `kontext` None means the sheet uses the dev transformer
    (the test configs only), `dev` None means text-to-image and training are refused."""

    dev: str | None
    kontext: str | None
    shared: bool  # one transformer serves both (tiny/wide random weights)
    refusal_sheet: str = ""
    refusal_text: str = ""


def choose(model_id: str, kontext_id: str | None, random_weights: bool) -> KontextChoice:
    """Decide from the two configured ids what a sheet and a text image run on."""
    if random_weights and not kontext_id:
        return KontextChoice(model_id, None, shared=True)
    model_is_kontext = not random_weights and is_kontext(model_id)
    if model_is_kontext:
        refusal = NEEDS_DEV.format(model=model_label(model_id), dev=DEV_HUB_ID)
        return KontextChoice(None, model_id, shared=True, refusal_text=refusal)
    if kontext_id and kontext_id != model_id:
        cls = None if random_weights else pipeline_class(kontext_id)
        if cls is not None and cls != KONTEXT_CLASS:
            refusal = NEEDS_KONTEXT.format(model=model_label(kontext_id), cls=cls, kontext=KONTEXT_HUB_ID)
            return KontextChoice(model_id, None, shared=False, refusal_sheet=refusal)
        return KontextChoice(model_id, kontext_id, shared=False)
    cls = pipeline_class(model_id) or "no Kontext pipeline"
    return KontextChoice(model_id, None, shared=False,
                         refusal_sheet=NEEDS_KONTEXT.format(model=model_label(model_id), cls=cls,
                                                            kontext=KONTEXT_HUB_ID))


def sheet_sentence(choice: KontextChoice) -> str:
    """Which model draws the character sheet, in a sentence for the banner."""
    if choice.refusal_text:
        return f"Character sheet only: {choice.refusal_text}"
    if choice.refusal_sheet:
        return ("No FLUX.1 Kontext model chosen yet, so the character sheet is refused until one is "
                f"({KONTEXT_HUB_ID}: Settings → Models, then Settings → Engine).")
    if choice.shared:
        return "The same random weights draw the character sheet."
    return (f"Character sheet with FLUX.1 Kontext from {model_label(choice.kontext)}: only its transformer, swapped "
            "under the same text encoders and VAE; the idle one waits in CPU memory when "
            "that much is free, else it is read again from disk.")
