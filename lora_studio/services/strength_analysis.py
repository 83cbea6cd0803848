"""Turning a strength sweep into an answer: which strength, and is the face frozen or ignored?

Two measures per strength, both over the same seeds:
- identity: mean face distance to the reference (lower = more like the character; < 0.6 = same
  person). Needs faces; on noise images it is absent.
- diversity: mean pairwise distance between the outputs of different seeds (faces if found, else
  a pixel measure). A LoRA that is too strong makes every seed give the same picture: diversity falls
  far below what the base model shows ("frozen face").
And one per cell: change from the no-LoRA output of the same seed; if even the highest strength
barely changes the picture, the LoRA "does nothing" (wrong trigger, wrong base, not loaded).

Thresholds are here, in one place, so the verdicts are explainable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput

VERDICT_WORDS = {"ok": "keeps the face", "frozen": "face frozen", "no_effect": "does nothing",
                 "weak": "face not kept", "unmeasured": "no face to measure"}
SAME_PERSON = 0.6
FROZEN_RATIO = 0.5  # diversity below half the base's = frozen
NO_EFFECT = 0.01  # mean pixel change below 1% at the highest strength = LoRA does nothing


@dataclass
class Cell:
    strength: float | None  # None = no LoRA at all
    seed: int
    path: str
    identity: float | None = None  # face distance to the reference
    change: float | None = None  # pixel distance to the no-LoRA image of the same seed


@dataclass
class StrengthRow:
    strength: float
    identity: float | None
    diversity: float | None
    change: float | None


@dataclass
class SweepAnalysis:
    rows: list[StrengthRow]
    base_diversity: float | None
    recommended: float | None
    verdict: str  # "ok" | "frozen" | "no_effect" | "weak" | "unmeasured"
    reason: str
    flags: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rows": [r.__dict__ for r in self.rows], "base_diversity": self.base_diversity,
            "recommended": self.recommended, "verdict": self.verdict, "reason": self.reason,
            "flags": self.flags,
        }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def analyse(rows: list[StrengthRow], base_diversity: float | None, has_faces: bool) -> SweepAnalysis:
    """Pick the strength that keeps the face without freezing it, and say why in one sentence."""
    rows = sorted(rows, key=lambda r: r.strength)
    lora_rows = [r for r in rows if r.strength > 0]
    flags: dict = {}
    if not lora_rows:
        return SweepAnalysis(rows, base_diversity, None, "unmeasured", "No LoRA strength above 0 was tested.")
    top = lora_rows[-1]
    if top.change is not None and top.change < NO_EFFECT:
        flags["no_effect"] = True
        return SweepAnalysis(
            rows, base_diversity, None, "no_effect",
            f"The LoRA does nothing: even at {top.strength:g} the images differ from the no-LoRA ones by "
            f"{100 * top.change:.1f}% — check the trigger word, the base model and the LoRA file.", flags)

    def frozen(row: StrengthRow) -> bool:
        return (base_diversity is not None and row.diversity is not None and base_diversity > 0
                and row.diversity < FROZEN_RATIO * base_diversity)

    frozen_rows = [r.strength for r in lora_rows if frozen(r)]
    flags["frozen_from"] = min(frozen_rows) if frozen_rows else None
    healthy = [r for r in lora_rows if not frozen(r)]
    if not healthy:
        return SweepAnalysis(
            rows, base_diversity, lora_rows[0].strength, "frozen",
            f"Faces are frozen at every strength tested (seeds give near-identical images from "
            f"{lora_rows[0].strength:g}); try lower strengths or an earlier checkpoint.", flags)
    if has_faces and any(r.identity is not None for r in healthy):
        keeping = [r for r in healthy if r.identity is not None and r.identity < SAME_PERSON]
        if keeping:
            best = min(keeping, key=lambda r: (r.identity, r.strength))
            # the lowest strength within 0.03 of the best identity keeps the most flexibility
            pick = min((r for r in keeping if r.identity <= best.identity + 0.03), key=lambda r: r.strength)
            why = (f"{pick.strength:g} keeps the face (distance {pick.identity:.2f} < {SAME_PERSON}) while "
                   f"seeds still vary (diversity {pick.diversity:.2f})")
            if frozen_rows:
                why += f"; from {min(frozen_rows):g} the face freezes"
            return SweepAnalysis(rows, base_diversity, pick.strength, "ok", why + ".", flags)
        best = min(healthy, key=lambda r: r.identity if r.identity is not None else 9)
        return SweepAnalysis(
            rows, base_diversity, best.strength, "weak",
            f"No strength reaches the same face (best distance {best.identity:.2f} at {best.strength:g}); "
            "the LoRA is undertrained or the trigger word is missing from the prompt.", flags)
    pick = max(healthy, key=lambda r: r.strength)
    why = (f"No faces to measure (the tiny engine draws noise), so {pick.strength:g} is the strongest "
           "setting whose seeds still vary")
    if frozen_rows:
        why += f"; from {min(frozen_rows):g} outputs collapse"
    return SweepAnalysis(rows, base_diversity, pick.strength, "unmeasured", why + ".", flags)


def parse_strengths(text: str | list) -> list[float]:
    """'0, 0.6, 0.8' → [0.0, 0.6, 0.8]; refuses words, negatives, absurd values and long lists."""
    parts = text if isinstance(text, list) else [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    if len(parts) > 12:
        raise InvalidInput(f"{len(parts)} strengths given; test at most 12 at once (e.g. 0, 0.6, 0.8, 1.0, 1.2).")
    values = []
    for part in parts:
        try:
            value = float(part)
        except (TypeError, ValueError):
            raise InvalidInput(f"Strength {str(part).strip()!r} is not a number; use e.g. 0, 0.6, 0.8, 1.0, 1.2.") from None
        if not 0.0 <= value <= 2.0 or value != value:
            raise InvalidInput(f"Strength {value:g} is out of range: use values from 0 to 2.")
        values.append(round(value, 4))
    if not values:
        raise InvalidInput("Give at least one strength, e.g. 0.6, 0.8, 1.0.")
    return sorted(set(values))


def summarise(cells: list[Cell], pixel_distance, face_distance=None) -> tuple[list[StrengthRow], float | None]:
    """Rows per strength from the grid's cells; the base row (strength None) gives base diversity."""
    by_strength: dict = {}
    for cell in cells:
        by_strength.setdefault(cell.strength, []).append(cell)
    rows = []
    base_div = None
    for strength, group in by_strength.items():
        diversity = _diversity(group, pixel_distance, face_distance)
        if strength is None:
            base_div = diversity
            continue
        rows.append(StrengthRow(strength, _mean(c.identity for c in group), diversity,
                                _mean(c.change for c in group)))
    return rows, base_div


def _diversity(group: list[Cell], pixel_distance, face_distance) -> float | None:
    if len(group) < 2:
        return None
    pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1:]]
    if face_distance is not None:
        values = [face_distance(a.path, b.path) for a, b in pairs]
        if all(v is not None for v in values):
            return _mean(values)
    return _mean(pixel_distance(a.path, b.path) for a, b in pairs)


def compare_checkpoints(analyses: dict[str, SweepAnalysis]) -> str:
    """Whether a LoRA keeps its strength from one checkpoint to another (FLUX.2 [klein]: trained on the
    base, drawn on the distilled one): the recommendation on each, and identity per strength side by side
    (the change from the no-LoRA images where there is no face to measure)."""
    names = list(analyses)
    picks = ", ".join(f"{name} {a.recommended:g}" if a.recommended is not None else f"{name} none"
                      for name, a in analyses.items())
    strengths = sorted({r.strength for a in analyses.values() for r in a.rows if r.strength > 0})
    faces = any(r.identity is not None for a in analyses.values() for r in a.rows)

    def value(analysis: SweepAnalysis, strength: float) -> str:
        row = next((r for r in analysis.rows if r.strength == strength), None)
        measure = None if row is None else (row.identity if faces else row.change)
        return "—" if measure is None else (f"{measure:.2f}" if faces else f"{100 * measure:.1f}%")

    table = "; ".join(f"{s:g}: " + " / ".join(value(analyses[n], s) for n in names) for s in strengths)
    what = "face distance" if faces else "change from the no-LoRA images (no face to measure)"
    recommended = [a.recommended for a in analyses.values()]
    kept = None not in recommended and max(recommended) - min(recommended) <= 0.2
    verdict = ("the LoRA keeps its strength across them" if kept else
               "the strength to use differs between them: take the one of the checkpoint you draw with")
    return (f"Recommended strength by checkpoint: {picks} — {verdict}. {what.capitalize()} by strength "
            f"({' / '.join(names)}): {table}.")
