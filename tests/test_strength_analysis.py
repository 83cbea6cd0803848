"""The tester's verdicts from measured rows: keep the face, frozen, does nothing, too weak."""
import pytest

from lora_studio.services.strength_analysis import StrengthRow, analyse, parse_strengths


def rows(*values):
    return [StrengthRow(s, identity, diversity, change) for s, identity, diversity, change in values]


def test_recommends_lowest_strength_that_keeps_the_face_before_it_freezes():
    result = analyse(rows((0.6, 0.62, 0.50, 0.10), (0.8, 0.45, 0.46, 0.15), (1.0, 0.43, 0.40, 0.20),
                          (1.2, 0.41, 0.10, 0.30)), base_diversity=0.55, has_faces=True)
    assert result.verdict == "ok"
    assert result.recommended == 0.8  # 1.0 is only 0.02 better: the lower strength keeps flexibility
    assert result.flags["frozen_from"] == 1.2
    assert "freezes" in result.reason and "0.8" in result.reason


def test_frozen_everywhere():
    result = analyse(rows((0.6, 0.3, 0.05, 0.2), (1.0, 0.3, 0.04, 0.3)), base_diversity=0.5, has_faces=True)
    assert result.verdict == "frozen" and "frozen" in result.reason


def test_lora_that_does_nothing():
    result = analyse(rows((0.6, None, 0.5, 0.001), (1.2, None, 0.5, 0.004)), base_diversity=0.5, has_faces=False)
    assert result.verdict == "no_effect" and result.recommended is None
    assert "does nothing" in result.reason and "trigger" in result.reason


def test_face_never_reached_means_undertrained():
    result = analyse(rows((0.6, 0.8, 0.5, 0.1), (1.2, 0.7, 0.45, 0.2)), base_diversity=0.5, has_faces=True)
    assert result.verdict == "weak" and result.recommended == 1.2
    assert "undertrained" in result.reason


def test_without_faces_it_says_it_cannot_measure_identity():
    result = analyse(rows((0.6, None, 0.5, 0.05), (1.2, None, 0.45, 0.1)), base_diversity=0.5, has_faces=False)
    assert result.verdict == "unmeasured" and result.recommended == 1.2
    assert "No faces" in result.reason


@pytest.mark.parametrize("text,expected", [("0, 0.6,0.8 ;1.0", [0.0, 0.6, 0.8, 1.0]), ("1.2,1.2", [1.2])])
def test_parse_strengths(text, expected):
    assert parse_strengths(text) == expected


@pytest.mark.parametrize("text,message", [("abc", "not a number"), ("-5", "out of range"), ("3", "out of range"),
                                          ("", "at least one"), ("nan", "out of range"),
                                          (",".join(["0.1"] * 3 + [str(i / 10) for i in range(13)]), "at most 12")])
def test_bad_strengths_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_strengths(text)
