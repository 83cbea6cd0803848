"""The one door for text the app keeps: every stored string passes here first.

A string kept in a workspace file is served back to every page and read again at every start, so one
bad character from one request could stop the app for everyone: a lone UTF-16 surrogate cannot be
written as UTF-8, a control character breaks a line or a log, and an unbounded text fills the disk.
So each kept text is refused, in words, when it is not valid Unicode, holds control characters where
they make no sense, or is longer than its bound.

Names (characters, LoRAs, presets) are shown in lists where two that look the same would mislead:
they are normalised with NFKC, compared case-folded through a small table of Cyrillic and Greek
letters that look Latin, and refused when they mix scripts ("Stаndard" with a Cyrillic а).
Text shown as Markdown next to estimates (a price's source) must be plain: no links, HTML or markup.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Iterable

from ..errors import InvalidInput

LINE_BREAKS = "\n\r\t"
# Direction overrides and isolates reorder what a reader sees (a name that reads differently than it sorts).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MARKUP = frozenset("<>[]`*_#|\\~{}")
# Letters of other scripts that are drawn like Latin ones (Unicode's confusables, the common part).
LOOK_ALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ϲ": "c", "ɑ": "a", "ɡ": "g", "ı": "i", "ℓ": "l",
})
# Scripts that are written together in one name (Japanese mixes Han with kana; Korean may use Han).
SCRIPT_GROUPS = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "IDEOGRAPHIC": "CJK"}


def check_text(value: Any, what: str, max_chars: int, *, multiline: bool = True, required: bool = False,
               example: str = "") -> str:
    """Text as it will be stored: stripped, valid Unicode, no control characters, at most `max_chars`."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text.")
    value = value.strip()
    if len(value) > max_chars:
        raise InvalidInput(f"{what} is {len(value)} characters long; keep it under {max_chars}.")
    _unicode(value, what)
    allowed = LINE_BREAKS if multiline else ""
    if any(_control(ch) and ch not in allowed for ch in value):
        raise InvalidInput(f"{what} contains control characters; use letters, digits, spaces and punctuation"
                           + (" (line breaks are fine)." if multiline else "."))
    if required and not value:
        raise InvalidInput(f"{what} is empty" + (f"; write e.g. {example!r}." if example else "."))
    return value


def check_name(value: Any, what: str, max_chars: int, example: str = "Mila") -> str:
    """A label shown in lists: one line, normalised (NFKC, spaces collapsed), in one script."""
    value = check_text(value, what, max_chars, multiline=False, example=example)
    value = " ".join(unicodedata.normalize("NFKC", value).split())
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput(f"{what} contains characters that are not shown; use letters, digits and spaces.")
    scripts = _scripts(value)
    if len(scripts) > 1:
        raise InvalidInput(f"{what} {value!r} mixes letters of different alphabets ({', '.join(sorted(scripts))}) "
                           f"and could pass for another name; write it in one alphabet, e.g. {example!r}.")
    return value


def name_key(value: str) -> str:
    """What two names are compared by: NFKC, case-folded, look-alike letters read as Latin, spaces collapsed."""
    folded = unicodedata.normalize("NFKC", value or "").casefold().translate(LOOK_ALIKES)
    return " ".join(folded.split())


def same_name(name: str, others: Iterable[str]) -> str | None:
    """The first of `others` that reads as `name` (letter case and look-alikes aside), or None."""
    key = name_key(name)
    return next((other for other in others if name_key(other) == key), None)


def check_plain(value: Any, what: str, max_chars: int) -> str:
    """One line of plain text shown inside Markdown: no links, HTML or markup characters."""
    value = " ".join(check_text(value, what, max_chars, multiline=False).split())
    lowered = value.lower()
    if any(ch in MARKUP for ch in value) or "://" in lowered or "www." in lowered or "](" in value:
        raise InvalidInput(f"{what} must be plain text: letters, digits, spaces and . , ; : ( ) / ' \" - + % $ "
                           "(no links, HTML or Markdown).")
    return value


def _valid(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unicode(value: str, what: str) -> None:
    if not _valid(value):
        raise InvalidInput(f"{what} contains a character that is not valid Unicode (a lone surrogate); "
                           "type or paste it again.")


def _control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in BIDI_CONTROLS


def _scripts(value: str) -> set[str]:
    found = set()
    for ch in value:
        if ch.isalpha():
            word = unicodedata.name(ch, "UNKNOWN").split()[0]
            found.add(SCRIPT_GROUPS.get(word, word))
    return found
