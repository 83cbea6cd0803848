"""Whole-set judgements: consistency, auto-select and the warnings LoRA dataset guides give."""
from __future__ import annotations

import itertools
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from .faces import _names, _near_duplicates
from .measures import _background_diff, face_distance
from .types import DEFAULT_THRESHOLDS, ImageScore, SetScore, Thresholds


# --------------------------------------------------------------------------------------
# Sets
# --------------------------------------------------------------------------------------
def _distance_matrix(vectors: Sequence[np.ndarray]) -> np.ndarray:
    if not vectors:
        return np.zeros((0, 0))
    m = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in vectors])
    sq = (m * m).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (m @ m.T)
    d = np.sqrt(np.clip(d2, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return d


def pairwise_mean(vectors: Iterable[np.ndarray | None]) -> float | None:
    """Mean Euclidean distance over all pairs (None entries skipped); None if < 2 vectors."""
    vecs = [v for v in vectors if v is not None]
    if len(vecs) < 2:
        return None
    d = _distance_matrix(vecs)
    iu = np.triu_indices(len(vecs), k=1)
    return float(d[iu].mean())


def set_consistency(
    descriptors: Sequence[np.ndarray | None],
    reference: np.ndarray | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> SetScore:
    """How much a set of face descriptors agrees (None entries, i.e. no face, are skipped)."""
    vecs = [np.asarray(v, dtype=np.float64) for v in descriptors if v is not None]
    n = len(vecs)
    mean_pairwise = share = None
    if n >= 2:
        d = _distance_matrix(vecs)[np.triu_indices(n, k=1)]
        mean_pairwise = float(d.mean())
        share = float((d < thresholds.same_person).mean())
    to_ref = None
    if reference is not None and n:
        to_ref = float(np.mean([face_distance(v, reference) for v in vecs]))
    return SetScore(
        n=n, mean_pairwise=mean_pairwise, share_under_threshold=share, mean_to_reference=to_ref
    )


def _category_of(
    categories: Sequence[str | None] | Mapping[str, str | None] | None,
    scores: Sequence[ImageScore],
) -> dict[str, str | None]:
    if categories is None:
        return {}
    if isinstance(categories, Mapping):
        return {str(k): v for k, v in categories.items()}
    if len(categories) != len(scores):
        raise ValueError(
            "categories must have one entry per score (or be a key -> category mapping)."
        )
    return {s.key: c for s, c in zip(scores, categories)}


def _quotas(counts: Mapping[str, int], order: Sequence[str], n: int) -> dict[str, int]:
    """Round-robin share of n slots over categories, capped by how many each has."""
    quota = {c: 0 for c in order}
    left = n
    while left > 0:
        progressed = False
        for c in order:
            if left > 0 and quota[c] < counts[c]:
                quota[c] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return quota


_QUALITY_CODES = ("blurry", "low_resolution", "face_too_small", "several_faces", "odd_aspect")
# Cost terms of auto_select, in units of face distance (same person ~0.2-0.5):
_PENALTY_NO_FACE = 10.0  # no-face images only after every image with a face
_PENALTY_OTHER_PERSON = 1.0  # a face at/over the same-person line ranks after all that are under
_PENALTY_PER_FLAG = 0.25  # each quality flag costs about as much as a clearly worse face match
_BONUS_CATEGORY = 0.5  # an under-quota category beats a mild flag or a somewhat worse match


def auto_select(
    scores: Sequence[ImageScore],
    n: int = 25,
    categories: Sequence[str | None] | Mapping[str, str | None] | None = None,
    locked: Iterable[str] = (),
    excluded: Iterable[str] = (),
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """Pick up to ``n`` keys that agree with the reference and with each other and cover the
    categories; returns locked keys first, then the picks in the order they were chosen.

    Greedy: each step takes the candidate with the lowest cost = distance to the reference
    + mean distance to the faces already chosen + quality penalties - a bonus when its
    category is below its round-robin share. Images without a face rank after all images
    with one (so a set of faceless images, e.g. from the tiny test model, still gets a
    deterministic, category-balanced pick that prefers unflagged images). Two
    near-duplicates are never picked together (locked ones are kept as the user chose);
    excluded keys are never picked and win over locked. ``categories`` is either one entry
    per score or a key -> category mapping.
    """
    excluded_set = set(excluded)
    by_key: dict[str, ImageScore] = {}
    for s in scores:
        by_key.setdefault(s.key, s)
    cat_of = _category_of(categories, scores)

    chosen: list[str] = []
    for k in locked:
        if k not in excluded_set and k not in chosen:
            chosen.append(k)
    n = max(0, int(n))
    candidates = [
        s for s in by_key.values() if s.key not in excluded_set and s.key not in chosen
    ]
    if len(chosen) >= n or not candidates:
        return chosen

    pool = [by_key[k] for k in chosen if k in by_key] + candidates
    index = {s.key: i for i, s in enumerate(pool)}
    has_face = [s.descriptor is not None for s in pool]
    face_idx = [i for i, f in enumerate(has_face) if f]
    dist = np.zeros((len(pool), len(pool)))
    if face_idx:
        sub = _distance_matrix([pool[i].descriptor for i in face_idx])  # type: ignore[misc]
        dist[np.ix_(face_idx, face_idx)] = sub

    order: list[str] = []
    counts: dict[str, int] = {}
    for k in chosen + [s.key for s in candidates]:
        c = cat_of.get(k)
        if c is not None:
            if c not in counts:
                order.append(c)
                counts[c] = 0
            counts[c] += 1
    quota = _quotas(counts, order, n)
    taken = {c: 0 for c in order}
    for k in chosen:
        c = cat_of.get(k)
        if c is not None:
            taken[c] += 1

    base: list[float] = []
    for s in pool:
        cost = 0.0
        if s.descriptor is None:
            cost += _PENALTY_NO_FACE
        elif s.distance is not None:
            cost += s.distance
            if s.distance >= thresholds.same_person:
                cost += _PENALTY_OTHER_PERSON
        cost += _PENALTY_PER_FLAG * sum(f.code in _QUALITY_CODES for f in s.flags)
        base.append(cost)

    dup = np.zeros((len(pool), len(pool)), dtype=bool)
    for i, j in itertools.combinations(range(len(pool)), 2):
        dup[i, j] = dup[j, i] = _near_duplicates(pool[i], pool[j], thresholds)

    chosen_idx = [index[k] for k in chosen if k in index]
    remaining = [index[s.key] for s in candidates]
    while len(chosen) < n and remaining:
        chosen_faces = [j for j in chosen_idx if has_face[j]]
        best_i, best_cost = -1, math.inf
        for i in remaining:
            s = pool[i]
            if chosen_idx and dup[i, chosen_idx].any():
                continue
            cost = base[i]
            if has_face[i]:
                if chosen_faces:
                    cost += float(dist[i, chosen_faces].mean())
                else:  # first face: the one most typical of all faces on offer
                    others = [j for j in face_idx if j != i]
                    cost += float(dist[i, others].mean()) if others else 0.0
            c = cat_of.get(s.key)
            if c is not None and taken[c] < quota[c]:
                cost -= _BONUS_CATEGORY
            if cost < best_cost - 1e-12:
                best_i, best_cost = i, cost
        if best_i < 0:
            break  # everything left is a near-duplicate of a pick
        remaining.remove(best_i)
        chosen_idx.append(best_i)
        chosen.append(pool[best_i].key)
        c = cat_of.get(pool[best_i].key)
        if c is not None:
            taken[c] += 1
    return chosen


def dataset_warnings(
    scores: Sequence[ImageScore],
    selected: Sequence[str],
    categories: Mapping[str, str | None] | Sequence[str | None] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """Plain-language warnings about a selected training set, the ones LoRA dataset guides
    give: too few or too many images, little variety, same background everywhere, small or
    missing faces, low resolution, blur, duplicates and faces that don't agree."""
    t = thresholds
    by_key = {s.key: s for s in scores}
    cat_of = _category_of(categories, scores)
    keys = list(dict.fromkeys(selected))
    k = len(keys)
    out: list[str] = []
    if k == 0:
        return ["No images are selected for training."]
    if k < t.min_images:
        out.append(
            f"Only {k} images are selected; a character LoRA usually needs about {t.min_images}-"
            f"{t.max_images} varied images. Generate or add more."
        )
    elif k > t.max_images:
        out.append(
            f"{k} images are selected; more than about {t.max_images} rarely helps a character "
            "LoRA and makes training slower. Consider dropping the weakest."
        )

    if cat_of:
        sel_cats = [cat_of.get(key) for key in keys if cat_of.get(key) is not None]
        if len(sel_cats) >= 4:
            top, top_n = max(
                ((c, sel_cats.count(c)) for c in dict.fromkeys(sel_cats)), key=lambda cn: cn[1]
            )
            if top_n / len(sel_cats) > t.max_category_share:
                out.append(
                    f"{top_n} of {len(sel_cats)} selected images are '{top}' images; with so "
                    "little variety the LoRA may only reproduce that one look. Mix in other "
                    "categories."
                )
        missing = [c for c in dict.fromkeys(v for v in cat_of.values() if v) if c not in sel_cats]
        if missing and sel_cats:
            out.append(
                "No " + ", ".join(f"'{c}'" for c in missing) + " images are selected, although "
                "some were made; covering every category makes the LoRA more flexible."
            )

    chosen = [by_key[key] for key in keys if key in by_key]
    m = len(chosen)

    def many(count: int) -> bool:
        return m > 0 and count > 0 and count / m >= t.many_share

    backs = [s.background for s in chosen if s.background is not None]
    if len(backs) >= 3:
        pairs = list(itertools.combinations(backs, 2))
        similar = sum(_background_diff(a, b) <= t.background_diff for a, b in pairs)
        if similar / len(pairs) >= t.background_pairs_share:
            out.append(
                "Most selected images have nearly the same background; the LoRA may learn the "
                "background as part of the character. Include images in different settings."
            )

    no_face = [s.key for s in chosen if not s.face_found]
    if many(len(no_face)):
        out.append(
            f"{len(no_face)} of {m} selected images show no detectable face ({_names(no_face)}); "
            "they teach the LoRA nothing about the face."
        )
    small = [s.key for s in chosen if s.has_flag("face_too_small")]
    if many(len(small)):
        out.append(
            f"In {len(small)} of {m} selected images the face is small; add close-ups so the LoRA "
            "learns facial detail."
        )
    low = [s.key for s in chosen if s.has_flag("low_resolution")]
    if many(len(low)):
        out.append(
            f"{len(low)} of {m} selected images are low resolution (short side under "
            f"{t.min_resolution} px); the LoRA will learn a soft look."
        )
    blurry = [s.key for s in chosen if s.has_flag("blurry")]
    if many(len(blurry)):
        out.append(f"{len(blurry)} of {m} selected images look blurry ({_names(blurry)}).")

    dup_pairs = [
        (a.key, b.key)
        for a, b in itertools.combinations(chosen, 2)
        if _near_duplicates(a, b, t)
    ]
    if dup_pairs:
        shown = "; ".join(f"'{a}' and '{b}'" for a, b in dup_pairs[:3])
        more = f" (and {len(dup_pairs) - 3} more pairs)" if len(dup_pairs) > 3 else ""
        out.append(f"Near-duplicates in the selection: {shown}{more}. Keep only one of each.")

    others = [s.key for s in chosen if s.same_person is False]
    if others:
        out.append(
            f"{len(others)} selected image(s) look like a different person than the reference "
            f"(face distance {t.same_person} or more): {_names(others)}."
        )
    consistency = set_consistency([s.descriptor for s in chosen], thresholds=t)
    if (
        consistency.n >= 3
        and consistency.share_under_threshold is not None
        and consistency.share_under_threshold < t.min_consistency
    ):
        out.append(
            f"Only {consistency.share_under_threshold:.0%} of face pairs in the selection look "
            "like the same person; the LoRA may learn a blend of faces. Remove the odd ones out."
        )
    return out
