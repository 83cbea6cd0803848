"""Which checkpoint each job runs, decided from the configured models (no torch).

One pipeline is in memory: the configured model's tokenizers, text encoders, VAE and transformer.
A second transformer may take turns under the same encoders (transformer_slots.py), and each job
runs the transformer of its *role*:

    FLUX.1          pictures and training on FLUX.1-dev ("dev"); the character sheet on
                    FLUX.1-Kontext-dev's own transformer ("kontext"), which FLUX.1-dev cannot replace.
    FLUX.2 [klein]  pictures and the sheet (a reference edit by the same pipeline) on the distilled
                    checkpoint ("distilled", 4 steps); training on the base ("base"), which LoRAs are
                    trained on. The other flavour is the second model given, or the hub sibling of a
                    known checkpoint when it is on disk; without it every job runs on the one there is.

The tiny and wide FLUX.1 configs carry random weights: one transformer serves both FLUX.1 roles there.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..family import FLUX1, KLEIN, KONTEXT_CLASS, Family, checkpoint
from .model_kind import (BUILT_IN_SIBLINGS, DEV_HUB_ID, KONTEXT_HUB_ID, is_present, model_flavour, model_label,
                         pipeline_class)

NEEDS_KONTEXT = (
    "The character sheet needs FLUX.1 Kontext, and {model} is not a Kontext model (its model_index.json "
    "names {cls}): FLUX.1-dev was never trained to edit an image. Download {kontext} in Settings → Models "
    "and choose it as the Kontext model in Settings → Engine (or start with --kontext-model). FLUX.2 [klein] "
    "draws the sheet with its own checkpoint instead."
)
NEEDS_DEV = (
    "{model} is FLUX.1 Kontext, an image editor: text-to-image and training need FLUX.1-dev. Choose "
    "{dev} as the dev model in Settings → Engine (or --model) and keep {model} as the Kontext model."
)


@dataclass(frozen=True)
class ModelChoice:
    """The role each job runs and the model id each role's transformer is read from. `loaded` is the
    role of the configured model, whose whole pipeline loads; every other role brings its transformer only."""

    family: Family
    sources: tuple[tuple[str, str], ...]  # (role, model id)
    loaded: str
    pictures: str
    sheet: str
    training: str
    shared: bool = False  # one transformer serves every role (random-weight FLUX.1)
    refusal_sheet: str = ""
    refusal_text: str = ""  # text-to-image and training refused (a Kontext model alone)
    note: str = ""  # what the pairing means for the user, for the banner and the training log

    def source(self, role: str) -> str | None:
        return dict(self.sources).get(role)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role, _ in self.sources)

    @property
    def kontext(self) -> str | None:
        """FLUX.1: the model the sheet's transformer comes from (None: the dev transformer serves)."""
        return self.source("kontext")


def choose(model_id: str, second_id: str | None, random_weights: bool) -> ModelChoice:
    """Decide from the configured model (and the second one) what each job runs."""
    flavour = model_flavour(model_id)
    if flavour is not None and flavour.family is KLEIN:
        return _klein(model_id, second_id, flavour.distilled)
    return _flux1(model_id, second_id, random_weights)


def _flux1(model_id: str, kontext_id: str | None, random_weights: bool) -> ModelChoice:
    dev_only = dict(family=FLUX1, loaded="dev", pictures="dev", training="dev")
    if random_weights and not kontext_id:
        return ModelChoice(sources=(("dev", model_id),), sheet="dev", shared=True, **dev_only)
    if not random_weights and pipeline_class(model_id) == KONTEXT_CLASS:
        return ModelChoice(sources=(("dev", model_id),), sheet="dev", shared=True,
                           refusal_text=NEEDS_DEV.format(model=model_label(model_id), dev=DEV_HUB_ID), **dev_only)
    if kontext_id and kontext_id != model_id:
        cls = None if random_weights else pipeline_class(kontext_id)
        if cls is not None and cls != KONTEXT_CLASS:
            refusal = NEEDS_KONTEXT.format(model=model_label(kontext_id), cls=cls, kontext=KONTEXT_HUB_ID)
            return ModelChoice(sources=(("dev", model_id),), sheet="dev", refusal_sheet=refusal, **dev_only)
        return ModelChoice(sources=(("dev", model_id), ("kontext", kontext_id)), sheet="kontext", **dev_only)
    cls = pipeline_class(model_id) or "no Kontext pipeline"
    return ModelChoice(sources=(("dev", model_id),), sheet="dev", **dev_only,
                       refusal_sheet=NEEDS_KONTEXT.format(model=model_label(model_id), cls=cls,
                                                          kontext=KONTEXT_HUB_ID))


def _klein(model_id: str, second_id: str | None, distilled: bool) -> ModelChoice:
    own, other = ("distilled", "base") if distilled else ("base", "distilled")
    sibling, note = klein_sibling(model_id, second_id, distilled)
    sources = {own: model_id, **({other: sibling} if sibling else {})}
    pictures = "distilled" if "distilled" in sources else "base"
    training = "base" if "base" in sources else "distilled"
    if not note and not sibling:
        wanted = getattr(checkpoint(model_id), "sibling", None) or f"FLUX.2 [klein]'s {other} checkpoint"
        note = (f"Training runs on the distilled checkpoint {model_label(model_id)}: LoRAs train better on the base "
                f"({wanted}); download it in Settings → Models and the next training uses it."
                if distilled else
                f"Pictures and the sheet run on the base checkpoint {model_label(model_id)} ({KLEIN.base_defaults.steps} steps "
                f"with guidance); with the distilled one ({wanted}) downloaded they take "
                f"{KLEIN.distilled_defaults.steps} steps.")
    return ModelChoice(family=KLEIN, sources=tuple(sources.items()), loaded=own, pictures=pictures, sheet=pictures,
                       training=training, note=note)


def klein_sibling(model_id: str, second_id: str | None, distilled: bool) -> tuple[str | None, str]:
    """The other Klein flavour to pair with `model_id`, and a sentence when a given one cannot serve."""
    if second_id:
        found = model_flavour(second_id)
        if found is None or found.family is not KLEIN or found.distilled == distilled:
            what = found.describe() if found is not None else "not a model this app knows"
            other = "base" if distilled else "distilled"
            return None, (f"The second model {model_label(second_id)} is {what}, not FLUX.2 [klein]'s {other} flavour: "
                          "every job runs on the one model.")
        return second_id, ""
    if model_id in BUILT_IN_SIBLINGS:
        return BUILT_IN_SIBLINGS[model_id], ""
    known = checkpoint(model_id)
    if known is not None and known.sibling and is_present(known.sibling):
        return known.sibling, ""
    return None, ""


def sheet_sentence(choice: ModelChoice) -> str:
    """Which model draws the character sheet (and, for Klein, what trains), in a sentence for the banner."""
    if choice.family is KLEIN:
        sheet = (f"The character sheet is drawn by the same pipeline ({choice.sheet} checkpoint) with the "
                 "reference as the edit input: no second model.")
        training = choice.source(choice.training)
        if choice.training != choice.pictures:
            sheet += f" LoRAs train on the base checkpoint {model_label(training)}, swapped in under the same encoders."
        return f"{sheet} {choice.note}".strip()
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
