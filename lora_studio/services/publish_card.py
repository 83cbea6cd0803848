"""The model card a published LoRA carries on the Hub: YAML the Hub reads, then the export's card.

The YAML says what the Hub's pages and search use: `base_model` (the model the LoRA applies to: a
pre-quantized copy names its original), `instance_prompt` (the trigger word), the base's own licence
(FLUX.1-dev's non-commercial licence, Klein 4B's Apache-2.0 - never a licence the base does not
have: read from the model families' checkpoint rows for the bases this app knows, from the base's own
Hub card for others), `tags` (lora, diffusers, template:sd-lora, the family) and a `widget` of the
strength tester's images at the recommended strength. The text is the export's card (the file and strength per tool,
training/model_card.py) plus what no other trainer publishes: the face's distance to the reference
and the variety between seeds at each strength tested.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..engines import family
from ..training.model_card import model_card

Licence = tuple[str, Optional[str], Optional[str]]  # (license, license_name, license_link) as the card's YAML

DEV = "black-forest-labs/FLUX.1-dev"
QUANTIZED_OF = {"diffusers/FLUX.1-dev-bnb-8bit": DEV, "diffusers/FLUX.1-dev-bnb-4bit": DEV}


@dataclass
class CardFacts:
    """What the card says beyond the training metadata."""

    repo_id: str
    base_model: str
    licence: Licence
    strength: float | None  # the tester's recommendation (None: untested or none recommended)
    tested: bool
    prompt: str = ""  # the strength test's prompt (the widget's text)
    widget: list[str] = field(default_factory=list)  # images/... paths at the shown strength
    widget_strength: float | None = None
    rows: list[dict] = field(default_factory=list)  # the test's rows: strength, identity, diversity, change
    base_note: str = ""  # a sentence when the base is not what the YAML can name exactly


def base_of(meta: dict, is_repo_id) -> tuple[str, str]:
    """(the hub id the LoRA applies to, a note when it had to be inferred)."""
    base = str(meta.get("base_model") or "")
    if base in QUANTIZED_OF:
        return QUANTIZED_OF[base], f"Trained on `{base}`, a quantized copy of `{QUANTIZED_OF[base]}`."
    if is_repo_id(base):
        return base, ""
    if not base:
        return DEV, ("The training did not record its base model (LoRA Studio's built-in tiny test model has random "
                     f"weights: such a LoRA draws noise); the FLUX.1 architecture is `{DEV}`'s.")
    return DEV, f"Trained on a local copy of the weights (folder `{Path(base).name}`), taken to be `{DEV}`."


def base_licence(base: str, ask_hub: Callable[[str], Licence | None]) -> Licence:
    """The base's licence: its checkpoint row (engines/family) when the app knows it, else what its own
    card on the Hub says (`ask_hub`), else "other" pointing at the base's page."""
    known = family.checkpoint(base)
    if known is not None:
        return known.card_licence
    return ask_hub(base) or ("other", "see-base-model", f"https://huggingface.co/{base}")


def family_tag(base: str) -> str:
    known = family.checkpoint(base)
    if known is not None:
        return "flux2" if known.family == family.KLEIN.key else "flux"
    return "flux2" if "FLUX.2" in base or "flux2" in base.lower() else "flux"


def hub_card(meta: dict, facts: CardFacts) -> str:
    """README.md for the repo: YAML front matter the Hub reads, then the card's text."""
    from huggingface_hub import ModelCardData

    licence, name, link = facts.licence
    trigger = str(meta.get("trigger") or "")
    widget = [{"text": facts.prompt or trigger, "output": {"url": path}} for path in facts.widget]
    data = ModelCardData(base_model=facts.base_model, instance_prompt=trigger or None, license=licence,
                         license_name=name, license_link=link, library_name="diffusers",
                         pipeline_tag="text-to-image", widget=widget or None,
                         tags=["lora", "diffusers", "template:sd-lora", family_tag(facts.base_model), "text-to-image",
                               "lora-studio"])
    body = model_card({**meta, "base_model": facts.base_model}, facts.strength, facts.tested)
    title, rest = body.split("\n", 1)
    extra = [f"Published from LoRA Studio to `{facts.repo_id}`. Base model: `{facts.base_model}` "
             f"({licence if licence != 'other' else name}); the LoRA is bound by the base model's licence."]
    if facts.base_note:
        extra.append(facts.base_note)
    extra.append(identity_table(facts))
    return f"---\n{data.to_yaml()}\n---\n{title}\n\n" + "\n\n".join(extra) + "\n" + rest


def identity_table(facts: CardFacts) -> str:
    """The face at each strength the tester tried: distance to the reference (< 0.6: the same person),
    variety between seeds (low: a frozen face), change from the no-LoRA image."""
    if not facts.rows:
        return ("## The face at each strength\n\nNo strength test has run yet: the tester's numbers appear here "
                "after one (Strength tester tab) and a publish.")
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) else "–"

    lines = ["## The face at each strength", "",
             "Measured by LoRA Studio's strength tester with dlib's face descriptor on "
             f"{'the prompt `' + facts.prompt + '`' if facts.prompt else 'its test prompt'}: distance to the "
             "reference image (under 0.6: the same person), variety between seeds (near 0: a frozen face) and "
             "change from the image without the LoRA. A dash: no face was measured.", "",
             "| strength | face distance | variety between seeds | change |", "|---|---|---|---|"]
    for row in facts.rows:
        mark = " (recommended)" if facts.strength is not None and row.get("strength") == facts.strength else ""
        lines.append(f"| {row.get('strength'):g}{mark} | {cell(row.get('identity'))} | {cell(row.get('diversity'))} "
                     f"| {cell(row.get('change'))} |")
    if facts.widget:
        lines += ["", f"The pictures above are the test's images at strength {facts.widget_strength:g}."]
    return "\n".join(lines)
