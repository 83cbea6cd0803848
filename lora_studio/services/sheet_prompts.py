"""The 30 variations of a character sheet: what a LoRA needs to see of one face.

8 face angles, 6 expressions, 8 body poses and 8 contexts: a LoRA trained on one angle and one
light learns the photo, not the person. Each prompt is a Kontext edit instruction that keeps the
identity and changes one thing.
"""
from __future__ import annotations

from dataclasses import dataclass

KEEP = "Keep the same person, same face and identity, same hair."


@dataclass(frozen=True)
class SheetPrompt:
    slot: int
    category: str  # angle | expression | pose | context
    label: str
    prompt: str


_ANGLES = [
    ("front", "Close-up portrait, face looking straight at the camera"),
    ("three-quarter left", "Close-up portrait, head turned three-quarters to the left"),
    ("three-quarter right", "Close-up portrait, head turned three-quarters to the right"),
    ("profile left", "Close-up portrait in left profile view"),
    ("profile right", "Close-up portrait in right profile view"),
    ("from above", "Close-up portrait seen from slightly above, looking up at the camera"),
    ("from below", "Close-up portrait seen from slightly below"),
    ("over the shoulder", "Portrait looking back over the shoulder at the camera"),
]
_EXPRESSIONS = [
    ("smiling", "Close-up portrait, smiling warmly"),
    ("laughing", "Close-up portrait, laughing with an open mouth"),
    ("serious", "Close-up portrait, serious neutral expression"),
    ("surprised", "Close-up portrait, surprised expression, eyebrows raised"),
    ("sad", "Close-up portrait, sad thoughtful expression"),
    ("angry", "Close-up portrait, frowning angry expression"),
]
_POSES = [
    ("standing", "Full body, standing relaxed, arms at the sides"),
    ("sitting", "Full body, sitting on a chair"),
    ("walking", "Full body, walking towards the camera"),
    ("arms crossed", "Waist-up, arms crossed"),
    ("hands on hips", "Full body, hands on hips"),
    ("leaning", "Half body, leaning against a wall"),
    ("running", "Full body, running, dynamic pose"),
    ("lying down", "Lying on the grass, seen from above"),
]
_CONTEXTS = [
    ("gym", "In a gym, wearing sportswear, lifting a dumbbell"),
    ("café", "Sitting in a café with a cup of coffee, soft window light"),
    ("beach", "On a sunny beach at the sea, summer clothes"),
    ("bedroom", "In a cosy bedroom, morning light"),
    ("city street", "On a busy city street at night, neon lights"),
    ("office", "In a modern office at a desk with a laptop"),
    ("forest", "Hiking in a forest, outdoor jacket"),
    ("kitchen", "Cooking in a bright kitchen"),
]


def _build() -> tuple[SheetPrompt, ...]:
    prompts = []
    for category, rows in (("angle", _ANGLES), ("expression", _EXPRESSIONS), ("pose", _POSES),
                           ("context", _CONTEXTS)):
        for label, text in rows:
            prompts.append(SheetPrompt(len(prompts), category, label, f"{text}. {KEEP}"))
    return tuple(prompts)


SHEET_PROMPTS = _build()
CATEGORIES = ("angle", "expression", "pose", "context")
assert len(SHEET_PROMPTS) == 30
