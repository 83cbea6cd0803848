"""Tests for lora_studio.identity on real photos shipped with scikit-image.

The "same person" set is built from the astronaut photo (Eileen Collins) with the kinds of
changes a real set of one person contains: crops, mirror images, small head tilts,
lighting and contrast changes, resizing. Other people come from scikit-image's LFW subset
(25x25 px faces, upscaled); the cat, coffee and rocket photos have no human face.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from lora_studio import identity  # noqa: E402
from lora_studio.identity.measures import _hamming  # noqa: E402
from lora_studio.identity import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    Flag,
    ImageScore,
    NoFaceError,
    Thresholds,
    auto_select,
    dataset_warnings,
    detect_faces,
    image_similarity,
    pairwise_mean,
    reference_descriptor,
    score_image,
    score_images,
    set_consistency,
)

SAME = DEFAULT_THRESHOLDS.same_person


# ----------------------------------------------------------------------------- builders
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)())


def other_person(index: int, side: int = 300) -> Image.Image:
    """A different person's face from the LFW subset, upscaled to ``side`` pixels."""
    face = skdata.lfw_subset()[index]
    img = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB")
    return img.resize((side, side), Image.BICUBIC)


def on_canvas(img: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    """The image pasted at ``at`` on a plain gray canvas of ``size``."""
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(img, at)
    return canvas


def jpeg(img: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def shifted(img: Image.Image, dx: int) -> Image.Image:
    """Content moved right by dx pixels, the left edge repeated (like a re-crop)."""
    arr = np.asarray(img)
    padded = np.pad(arr, ((0, 0), (dx, 0), (0, 0)), mode="edge")
    return Image.fromarray(padded[:, : arr.shape[1]])


def rotated(img: Image.Image, degrees: float) -> Image.Image:
    return img.rotate(degrees, resample=Image.BICUBIC, fillcolor=(20, 20, 20))


def brighter(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def mouth_opened(img: Image.Image) -> Image.Image:
    """Same framing and background, different face: a dark open mouth painted in."""
    out = img.copy()
    ImageDraw.Draw(out).ellipse((208, 145, 240, 172), fill=(60, 20, 25))
    return out


def noise(seed: int, side: int = 64) -> Image.Image:
    """What the tiny test model produces: noise, no face."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def same_person_variants() -> dict[str, Image.Image]:
    a = astronaut()
    return {
        "crop_face": a.crop((100, 20, 356, 276)).resize((512, 512), Image.LANCZOS),
        "crop_upper": a.crop((60, 0, 420, 360)),
        "crop_90": a.crop((20, 20, 480, 480)),
        "flip": ImageOps.mirror(a),
        "rot_+10": rotated(a, 10),
        "rot_-10": rotated(a, -10),
        "brighter": ImageEnhance.Brightness(a).enhance(1.3),
        "darker": ImageEnhance.Brightness(a).enhance(0.7),
        "low_contrast": ImageEnhance.Contrast(a).enhance(0.7),
        "resized_1024": a.resize((1024, 1024), Image.LANCZOS),
        "crop_1024": a.crop((120, 40, 330, 250)).resize((1024, 1024), Image.LANCZOS),
    }


def fake_score(
    key: str, descriptor=None, distance=None, flags=(), phash: int = 0, background=None
) -> ImageScore:
    """An ImageScore without an image, for selection logic tests."""
    return ImageScore(
        key=key,
        face_found=descriptor is not None,
        n_faces=int(descriptor is not None),
        distance=distance,
        same_person=None if distance is None else distance < SAME,
        face_box=(0, 0, 100, 100) if descriptor is not None else None,
        descriptor=descriptor,
        flags=[Flag(code, code) for code in flags],
        blur=0.1,
        width=1024,
        height=1024,
        phash=phash,
        background=background,
    )


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return reference_descriptor(astronaut())


@pytest.fixture(scope="module")
def variant_scores(ref) -> dict[str, ImageScore]:
    items = list(same_person_variants().items())
    return {s.key: s for s in score_images(items, ref)}


@pytest.fixture(scope="module")
def mixed_scores(ref) -> list[ImageScore]:
    """Six same-person images, a re-saved copy of one, two other people, three without a face.

    (A brightened copy of the whole photo would be a near-duplicate of it, so "bright" is
    also cropped differently.)
    """
    a = astronaut()
    items = [
        ("orig", a),
        ("flip", ImageOps.mirror(a)),
        ("crop", a.crop((60, 0, 420, 360)).resize((512, 512), Image.LANCZOS)),
        ("tilt", rotated(a, 8)),
        ("bright", brighter(a.crop((0, 40, 430, 470)).resize((512, 512)), 1.2)),
        ("face", a.crop((100, 20, 356, 276)).resize((512, 512), Image.LANCZOS)),
        ("orig_copy", jpeg(a, 75)),
        ("other1", on_canvas(other_person(1), (512, 512), (100, 100))),
        ("other2", on_canvas(other_person(7), (512, 512), (100, 100))),
        ("cat", photo("chelsea")),
        ("coffee", photo("coffee")),
        ("rocket", photo("rocket")),
    ]
    return score_images(items, ref)


# ----------------------------------------------------------------------------- faces
def test_reference_descriptor_is_a_128d_vector(ref):
    assert ref.shape == (128,)
    assert np.all(np.isfinite(ref))
    faces = detect_faces(astronaut())
    assert len(faces) == 1
    left, top, right, bottom = faces[0].box
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # her face, not the suit


def test_scoring_is_deterministic(ref):
    a = astronaut().resize((700, 700), Image.LANCZOS)
    first, second = score_image(a, ref), score_image(a, ref)
    assert np.array_equal(first.descriptor, second.descriptor)
    assert first.to_dict() == second.to_dict()


@pytest.mark.parametrize("name", list(same_person_variants()))
def test_same_person_variants_are_under_threshold(variant_scores, name):
    score = variant_scores[name]
    assert score.face_found, score.flag_codes
    assert score.distance is not None and score.distance < SAME
    assert score.same_person is True


def test_resized_image_boxes_are_in_original_pixels(variant_scores):
    box = variant_scores["resized_1024"].face_box
    # the face is at about (179, 83, 266, 170) in the 512 px photo, so twice that here
    assert box is not None
    assert all(abs(v - 2 * e) < 30 for v, e in zip(box, (179, 83, 266, 170)))


def test_full_size_detection_agrees_with_downscaled(ref):
    big = astronaut().resize((1024, 1024), Image.LANCZOS)
    down = score_image(big, ref)
    full = score_image(big, ref, thresholds=Thresholds(detect_max_side=None))
    assert down.face_found and full.face_found
    assert abs(down.distance - full.distance) < 0.1
    centre = lambda b: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)  # noqa: E731
    assert all(abs(a - b) < 30 for a, b in zip(centre(down.face_box), centre(full.face_box)))


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_no_face_photos_are_flagged(ref, name):
    score = score_image(photo(name), ref, key=name)
    assert not score.face_found and score.n_faces == 0
    assert score.distance is None and score.same_person is None and score.descriptor is None
    assert "no_face" in score.flag_codes


def test_reference_without_face_raises():
    with pytest.raises(NoFaceError, match="No face found in the reference image"):
        reference_descriptor(photo("chelsea"))
    assert issubclass(NoFaceError, ValueError)


def test_several_faces_scores_the_one_nearest_the_reference(ref):
    # astronaut on the left, a different (and larger) face on the right
    composite = on_canvas(astronaut(), (900, 512), (0, 0))
    composite.paste(other_person(1), (560, 100))
    score = score_image(composite, ref, key="two")
    assert score.n_faces >= 2
    assert "several_faces" in score.flag_codes
    assert score.distance < SAME
    assert score.face_box[2] <= 512  # the astronaut's half
    others = [f for f in detect_faces(composite) if f.box[0] >= 512]
    assert others and identity.face_distance(others[0].descriptor, ref) > SAME


def test_two_copies_of_the_same_person_are_several_faces(ref):
    a = astronaut()
    pair = on_canvas(a, (1024, 512), (0, 0))
    pair.paste(ImageOps.mirror(a), (512, 0))
    score = score_image(pair, ref)
    assert score.n_faces == 2 and "several_faces" in score.flag_codes
    assert score.same_person is True


def test_face_too_small(ref):
    small = on_canvas(astronaut().resize((384, 384), Image.LANCZOS), (1024, 1024), (300, 200))
    score = score_image(small, ref)
    assert score.face_found and score.same_person
    assert "face_too_small" in score.flag_codes
    big = on_canvas(astronaut(), (1024, 1024), (300, 200))
    assert "face_too_small" not in score_image(big, ref).flag_codes


def test_blurry_copy_is_flagged(ref, variant_scores):
    blurred = astronaut().filter(ImageFilter.GaussianBlur(2))
    score = score_image(blurred, ref)
    assert score.face_found
    assert "blurry" in score.flag_codes
    assert "blurry" not in score_image(astronaut(), ref).flag_codes
    # dim or low-contrast is not blurry
    assert "blurry" not in variant_scores["darker"].flag_codes
    assert "blurry" not in variant_scores["low_contrast"].flag_codes


def test_low_resolution_is_flagged_and_face_still_found(ref):
    score = score_image(astronaut().resize((300, 300), Image.LANCZOS), ref)
    assert "low_resolution" in score.flag_codes
    assert score.face_found and score.same_person  # the upsampling retry finds the 53 px face
    assert "low_resolution" not in score_image(astronaut(), ref).flag_codes


def test_odd_aspect_is_flagged(ref):
    wide = on_canvas(astronaut(), (1200, 512), (344, 0))
    assert "odd_aspect" in score_image(wide, ref).flag_codes


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_non_rgb_input_is_converted_and_flagged(ref, mode):
    img = astronaut().convert(mode)
    score = score_image(img, ref)
    assert score.face_found and score.same_person
    flag = next(f for f in score.flags if f.code == "not_rgb")
    assert mode in flag.reason and "converted to RGB" in flag.reason


def test_transparent_pixels_go_on_white(ref):
    rgba = astronaut().convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 400, 512, 512), fill=0)  # bottom strip transparent
    rgba.putalpha(alpha)
    score = score_image(rgba, ref)
    assert "not_rgb" in score.flag_codes and "white background" in score.flags[0].reason
    assert score.same_person


# ----------------------------------------------------------------------------- duplicates
def test_near_duplicates_are_flagged_with_the_other_key(ref):
    a = astronaut()
    items = [
        ("orig", a),
        ("resaved", jpeg(a, 60)),
        ("shift2", shifted(a, 2)),
        ("flip", ImageOps.mirror(a)),
        ("tilt", rotated(a, 10)),
    ]
    scores = {s.key: s for s in score_images(items, ref)}
    for key in ("orig", "resaved", "shift2"):
        flag = next(f for f in scores[key].flags if f.code == "near_duplicate")
        assert all(f"'{other}'" in flag.reason for other in {"orig", "resaved", "shift2"} - {key})
    assert "near_duplicate" not in scores["flip"].flag_codes
    assert "near_duplicate" not in scores["tilt"].flag_codes


def test_same_framing_with_a_changed_face_is_not_a_duplicate(ref):
    scores = score_images([("orig", astronaut()), ("mouth", mouth_opened(astronaut()))], ref)
    bits = _hamming(scores[0].phash, scores[1].phash)
    assert bits <= DEFAULT_THRESHOLDS.near_duplicate_bits  # the whole picture looks the same
    assert all("near_duplicate" not in s.flag_codes for s in scores)


def test_worker_count_does_not_change_results(ref):
    items = [("a", astronaut()), ("b", ImageOps.mirror(astronaut())), ("c", photo("coffee"))]
    one = [s.to_dict() for s in score_images(items, ref, workers=1)]
    two = [s.to_dict() for s in score_images(items, ref, workers=2)]
    assert one == two


# ----------------------------------------------------------------------------- sets
def test_set_consistency_numbers(variant_scores, mixed_scores, ref):
    same = set_consistency([s.descriptor for s in variant_scores.values()], ref)
    assert same.n == len(variant_scores)
    assert 0.0 < same.mean_pairwise < 0.4
    assert same.share_under_threshold == 1.0
    assert 0.0 < same.mean_to_reference < 0.3

    mixed = set_consistency([s.descriptor for s in mixed_scores], ref)  # None (no face) skipped
    assert mixed.n == 9
    assert mixed.mean_pairwise > same.mean_pairwise
    assert mixed.share_under_threshold < 1.0
    assert mixed.mean_to_reference > same.mean_to_reference

    assert set_consistency([ref]) == identity.SetScore(1, None, None, None)
    assert set_consistency([]).n == 0
    assert json.loads(json.dumps(same.to_dict()))["n"] == same.n


def test_pairwise_mean():
    assert pairwise_mean([np.array([0.0, 0.0]), np.array([3.0, 4.0])]) == pytest.approx(5.0)
    three = [np.zeros(2), np.array([3.0, 4.0]), None, np.array([6.0, 8.0])]
    assert pairwise_mean(three) == pytest.approx(20 / 3)  # (5 + 10 + 5) / 3, None skipped
    assert pairwise_mean([np.zeros(3)]) is None
    assert pairwise_mean([]) is None


def test_to_dict_is_json_safe_and_round_trips(mixed_scores):
    assert {score.descriptor is None for score in mixed_scores} == {True, False}  # both kinds round trip below
    for score in mixed_scores:
        plain = score.to_dict()
        text = json.dumps(plain)
        assert "descriptor" not in plain
        assert all(set(f) == {"code", "reason"} for f in json.loads(text)["flags"])
        full = json.loads(json.dumps(score.to_dict(include_arrays=True)))
        back = ImageScore.from_dict(full)
        assert back.to_dict() == plain
        if score.descriptor is not None:
            assert np.allclose(back.descriptor, score.descriptor)


# ----------------------------------------------------------------------------- auto_select
def test_auto_select_prefers_same_face_and_skips_duplicates(mixed_scores):
    picked = auto_select(mixed_scores, n=6)
    assert len(picked) == 6
    assert not {"orig", "orig_copy"} <= set(picked)
    assert not set(picked) & {"cat", "coffee", "rocket", "other1", "other2"}

    everything = auto_select(mixed_scores, n=100)
    assert not {"orig", "orig_copy"} <= set(everything)  # never both, even when short of images
    assert len(everything) == len(mixed_scores) - 1
    # same person first, then other people, faceless images last
    assert set(everything[:6]) <= {"orig", "orig_copy", "flip", "crop", "tilt", "bright", "face"}
    assert set(everything[6:8]) == {"other1", "other2"}
    assert set(everything[8:]) == {"cat", "coffee", "rocket"}


def test_auto_select_locked_and_excluded(mixed_scores):
    picked = auto_select(mixed_scores, n=4, locked=["cat"], excluded=["orig", "face"])
    assert picked[0] == "cat" and len(picked) == 4
    assert "orig" not in picked and "face" not in picked
    # the duplicate of an excluded image is fine on its own
    assert "orig_copy" in auto_select(mixed_scores, n=6, excluded=["orig"])
    # locked beats n; excluded beats locked
    assert auto_select(mixed_scores, n=1, locked=["cat", "coffee"]) == ["cat", "coffee"]
    assert auto_select(mixed_scores, n=3, locked=["cat"], excluded=["cat"])[0] != "cat"


def test_auto_select_covers_categories(mixed_scores):
    cats = {
        "orig": "angle", "flip": "angle", "crop": "angle", "tilt": "angle", "orig_copy": "angle",
        "bright": "context", "face": "expression",
        "other1": None, "other2": None, "cat": "pose", "coffee": "pose", "rocket": "pose",
    }
    per_score = [cats[s.key] for s in mixed_scores]
    picked = auto_select(mixed_scores, n=4, categories=per_score)
    assert {"bright", "face"} <= set(picked)  # the only 'context' and 'expression' images
    assert not set(picked) & {"cat", "coffee", "rocket"}  # covering 'pose' never beats a face
    assert auto_select(mixed_scores, n=4, categories=cats) == picked  # a mapping works too
    # without categories the two are not needed: the closest matches win
    assert len(auto_select(mixed_scores, n=4)) == 4


def test_auto_select_without_any_face_is_balanced_and_deterministic():
    images = {f"angle{i}": noise(i) for i in range(4)}
    images.update({f"pose{i}": noise(10 + i) for i in range(4)})
    images["pose_big"] = noise(20, side=600)  # the only image without a quality flag
    images["angle0_copy"] = images["angle0"].copy()
    items = list(images.items())
    scores = score_images(items, None)
    assert not any(s.face_found for s in scores)
    cats = {k: "angle" if k.startswith("angle") else "pose" for k in images}
    picked = auto_select(scores, n=4, categories=cats)
    assert picked == auto_select(scores, n=4, categories=cats)
    assert picked[0] == "pose_big"
    assert sorted(cats[k] for k in picked) == ["angle", "angle", "pose", "pose"]
    assert not {"angle0", "angle0_copy"} <= set(auto_select(scores, n=10, categories=cats))


def test_auto_select_picks_25_distinct_of_30_covering_categories():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=128)
    scores = []
    for i in range(30):
        d = centre + rng.normal(scale=0.03, size=128)
        phash = int(rng.integers(0, 2**62))
        scores.append(fake_score(f"k{i}", d, float(np.linalg.norm(d - centre)), phash=phash))
    cats = ["angle", "expression", "pose", "context"] * 7 + [None, None]
    picked = auto_select(scores, n=25, categories=cats)
    assert len(picked) == 25 and len(set(picked)) == 25
    assert {cats[int(k[1:])] for k in picked} >= {"angle", "expression", "pose", "context"}


# ----------------------------------------------------------------------------- warnings
def test_dataset_warnings_few_images_and_one_category(mixed_scores):
    keys = ["orig", "flip", "crop", "tilt", "bright"]
    cats = {k: "angle" for k in keys} | {"face": "expression"}
    warnings = dataset_warnings(mixed_scores, keys, cats)
    text = " ".join(warnings)
    assert "Only 5 images" in text
    assert "'angle'" in text  # 5 of 5 from one category
    assert "'expression'" in text  # made but not selected
    assert dataset_warnings(mixed_scores, []) == ["No images are selected for training."]


def test_dataset_warnings_quality_problems(mixed_scores):
    selected = ["orig", "orig_copy", "other1", "cat", "coffee"]
    text = " ".join(dataset_warnings(mixed_scores, selected))
    assert "near-duplicates" in text.lower() and "'orig'" in text
    assert "no detectable face" in text
    assert "different person" in text
    assert "same person" in text  # share of matching pairs is low


def test_dataset_warnings_size_and_backgrounds():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=128)
    plain = np.full((448, 3), 200, dtype=np.uint8)  # the same white backdrop everywhere
    many = [
        fake_score(f"k{i}", centre + rng.normal(scale=0.02, size=128), 0.2,
                   phash=int(rng.integers(0, 2**62)), background=plain)
        for i in range(35)
    ]
    text = " ".join(dataset_warnings(many, [s.key for s in many]))
    assert "35 images are selected" in text
    assert "same background" in text
    varied = [
        fake_score(s.key, s.descriptor, 0.2, phash=s.phash,
                   background=rng.integers(0, 256, (448, 3), dtype=np.uint8))
        for s in many[:25]
    ]
    assert dataset_warnings(varied, [s.key for s in varied]) == []


# ----------------------------------------------------------------------------- face-free similarity
def test_image_similarity():
    a = astronaut()
    assert image_similarity(a, a) == 0.0
    assert image_similarity(a, jpeg(a, 80)) < 0.02
    different = image_similarity(a, photo("coffee"))
    assert 0.1 < different <= 1.0
    assert image_similarity(a, ImageOps.mirror(a)) > 0.1
    assert image_similarity(noise(1), noise(2)) > image_similarity(noise(1), noise(1))
    black, white = Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32), (255, 255, 255))
    assert image_similarity(black, white) == pytest.approx(1.0)


def test_thresholds_are_one_frozen_object():
    t = Thresholds()
    assert t == DEFAULT_THRESHOLDS and t.same_person == 0.6 and t.min_resolution == 512
    with pytest.raises(Exception):
        t.same_person = 0.5  # type: ignore[misc]
