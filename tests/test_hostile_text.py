"""The one door for stored text (services/text.py): what cannot be stored and served back is refused
in words, and names that would pass for another are refused."""
from __future__ import annotations

import pytest

from lora_studio.errors import InvalidInput
from lora_studio.services import limits
from lora_studio.services.text import check_name, check_plain, check_text, same_name


@pytest.mark.parametrize("value, words", [
    ("x \ud800 y", "not valid Unicode"), ("a\x00b", "control"), ("a\x1bb", "control"),
    ("\u202eevil", "control"), ("a\u2028b", "control"), ("x" * 21, "21 characters"), (7, "must be text")])
def test_text_that_cannot_be_stored_is_refused(value, words):
    with pytest.raises(InvalidInput, match=words):
        check_text(value, "The text", 20)


def test_line_breaks_are_fine_in_prompts_not_in_names():
    assert check_text(" a\nb\tc ", "The prompt", 20) == "a\nb\tc"
    with pytest.raises(InvalidInput, match="control"):
        check_text("a\nb", "The name", 20, multiline=False)


@pytest.mark.parametrize("name", ["Stаndard", "Міla", "Mila\u200d", "Mi\u00adla"])
def test_names_that_mix_alphabets_or_hide_characters_are_refused(name):
    with pytest.raises(InvalidInput):
        limits.name(name)


@pytest.mark.parametrize("name, kept", [("Ｍｉｌａ", "Mila"), ("  Mila   v1 ", "Mila v1"), ("Мила", "Мила"),
                                        ("さくら 桜", "さくら 桜"), ("Zoë", "Zoë")])
def test_names_are_normalised_and_any_one_alphabet_is_fine(name, kept):
    assert check_name(name, "The name", 40) == kept


def test_look_alikes_and_letter_case_read_as_the_same_name():
    assert same_name("STANDARD", ["Beginner", "Standard"]) == "Standard"
    assert same_name("Ѕтаndаrd".translate({}), ["Standard"]) == "Standard"  # all look-alike letters
    assert same_name("ｓｔａｎｄａｒｄ", ["Standard"]) == "Standard"
    assert same_name("Standards", ["Standard"]) is None


@pytest.mark.parametrize("value", ["[cheap](https://x.example)", "<b>x</b>", "www.x.example", "a `b`", "*x*"])
def test_text_shown_inside_markdown_must_be_plain(value):
    with pytest.raises(InvalidInput, match="plain text"):
        check_plain(value, "The source", 200)
    assert check_plain("replicate.com/pricing (gpu-h100); 20 min", "The source", 200)


def test_a_lora_name_that_only_looks_like_another_is_taken(tmp_path):
    from lora_studio.config import Settings
    from lora_studio.store import new_id
    from lora_studio.studio import Studio

    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        studio.store.insert("loras", dict(id=new_id("lora_"), name="Ape", trigger="ape_v1", source="trained"))
        for name in ("APE", "Аре", "ａｐｅ"):  # letter case, Cyrillic look-alikes, full-width letters
            assert "already exists" in (studio.library.name_taken(name) or "")
        assert studio.library.name_taken("Apes") is None
