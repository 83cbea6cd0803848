"""What a character LoRA's caption may say: the trigger word first, then only what should stay free.

A LoRA learns, for its trigger word, whatever the captions leave unsaid. So a caption names what must
stay changeable at generation time - clothing, pose, framing, setting, lighting, expression - and says
nothing of the traits that make the face this person's, which the trigger word must carry. If a
caption says "blue eyes", the LoRA learns that blue eyes are a thing prompts ask for, and the eyes
drift when a prompt does not.

The traits kept out of generated captions (and pointed out, not removed, in a user's own edit):
- eye colour ("blue eyes", "green-eyed"); eyes as expression stay ("eyes closed", "looking up");
- hair colour and hairstyle ("blonde", "long wavy brown hair", "ponytail", "bald"): the character
  sheet keeps the same hair on every image, so it belongs to the character;
- skin tone and marks (complexion, freckles, moles, scars), facial features (cheekbones, jawline,
  eyebrows, lips, dimples) and facial hair; brows and lips as expression stay ("eyebrows raised");
- ethnicity, age, body shape and looks ("young Asian woman", "in her twenties", "slim", "beautiful")
  when they describe the person - "Japanese garden" and "old building" are settings and stay.
The subject's class word ("a woman", "a man", "a person") stays: it anchors the trigger word.

Captions are kept with the placeholder `[trigger]` (as FluxGym and ai-toolkit captions do), so one
set of captions follows the trigger word the user picks at export; shown and exported with the word.
"""
from __future__ import annotations

import re

from .sheet_prompts import SHEET_PROMPTS

TRIGGER_TOKEN = "[trigger]"
MAX_CAPTION = 600
INSTRUCTION = (
    "Write one caption for this picture; it will train an image model to draw this one character. Describe "
    "only what must stay free to change: the clothing and accessories, the pose and what the hands do, the "
    "framing and camera angle (close-up, half body, full body, from above), the setting and background, the "
    "lighting, and the facial expression. Never describe what makes this person who they are: no eye colour, "
    "hair colour or hairstyle, skin tone, facial features, ethnicity, age, body shape or looks. Call the "
    "subject 'a woman', 'a man' or 'a person'. One plain sentence of at most 50 words, no introduction.")

PERSON = r"(?:woman|women|man|men|person|people|girl|boy|lady|gentleman|guy|model|figure|female|male|individual)"
_ADJECTIVES = (
    r"young|younger|old|older|elderly|aged|middle-aged|teenage|teenaged|adolescent|mature|youthful|"
    r"asian|east[- ]asian|south[- ]asian|chinese|japanese|korean|indian|african|african[- ]american|black|white|"
    r"caucasian|european|latina|latino|hispanic|arab|arabic|middle[- ]eastern|mixed[- ]race|"
    r"beautiful|pretty|handsome|attractive|gorgeous|cute|stunning|lovely|"
    r"slim|slender|thin|skinny|curvy|muscular|petite|plus[- ]size|chubby|athletic|tall|short|"
    r"blonde?|brunette|red[- ]haired|redheaded|dark[- ]haired|fair[- ]haired|"
    r"fair[- ]skinned|dark[- ]skinned|light[- ]skinned|olive[- ]skinned|pale|tanned|freckled")
_PERSON_ADJECTIVE = re.compile(rf"\b(?:{_ADJECTIVES})\b[\s,]*(?=(?:[\w-]+[\s,]+){{0,3}}{PERSON}\b)", re.I)
_AGE_PHRASE = re.compile(r"\b(?:\d{1,2}[- ]years?[- ]old|in (?:her|his|their) (?:early |mid[- ]|late )?"
                         r"(?:teens|twenties|thirties|forties|fifties|sixties|\d0s))\b", re.I)
_SUBJECT_NOUNS = re.compile(r"\b(?:a|the)\s+(?:blonde?|brunette|redhead)\b(?!\s+\w*\s*" + PERSON + ")", re.I)
_HAIR = re.compile(r"\b(?:hair\w*|\w+-haired|bangs|fringe|ponytails?|pigtails?|braids?|braided|dreadlocks|"
                   r"curls|bald|buzz ?cut|undercut)\b", re.I)
_EYES = re.compile(r"\b(?:eyes?|\w+-eyed|irises)\b", re.I)
_FEATURES = re.compile(r"\b(?:skin|skin tone|complexion|freckles?|moles?|birthmarks?|scars?|wrinkles|cheekbones|"
                       r"jawline|eyebrows?|brows|eyelashes|lashes|lips|dimples?|beard\w*|mustache\w*|moustache\w*|"
                       r"stubble|goatee|face shape|(?:oval|round|square|heart-shaped|angular|chiselled|chiseled) face|"
                       r"(?:of )?(?:slim|athletic|slender|average|stocky|muscular) build)\b", re.I)
_EXPRESSION = re.compile(r"\b(?:closed|shut|open|opened|wide|squint\w*|half|downcast|looking|gaz\w*|glanc\w*|"
                         r"raised|furrowed|frown\w*|knit|pursed|parted|smil\w*|laugh\w*|grin\w*|pout\w*|wink\w*|"
                         r"contact|blink\w*|tears?|crying)\b", re.I)
_COLOURS = re.compile(r"\b(?:blue|green|brown|hazel|grey|gray|amber|dark|light|black|blonde?|auburn|ginger|red|"
                      r"chestnut|golden|silver|platinum|violet|pale|fair|olive|tan|tanned)\b", re.I)
_CHATTER = re.compile(r"^\s*(?:(?:the|this) (?:image|photo|photograph|picture|scene) (?:shows|depicts|features|"
                      r"captures|is of|presents)|in (?:this|the) (?:image|photo|picture),?|here is|caption:)\s*", re.I)
_SPLIT = re.compile(r"([,.;:!?\n]+\s*|\s+(?=(?:with|and|while|wearing|having|has|her|his|their)\b))", re.I)
_SPACES = re.compile(r"\s+")


def trait_of(piece: str) -> str | None:
    """The identity trait a phrase describes ("hair", "eyes", "features"), or None."""
    if _HAIR.search(piece):
        return "hair"
    if _EYES.search(piece) and (_COLOURS.search(piece) or not _EXPRESSION.search(piece)):
        return "eyes"
    found = _FEATURES.search(piece)
    if found and not (_EXPRESSION.search(piece) and re.search(r"brows?|eyebrows?|lips", found.group(0), re.I)):
        return "features"
    return None


def identity_words(text: str) -> list[str]:
    """The phrases of `text` that describe the face's identity traits (for a warning beside an edit)."""
    found = [m.group(0) for m in _AGE_PHRASE.finditer(text)]
    found += [m.group(0).strip(" ,") for m in _PERSON_ADJECTIVE.finditer(_AGE_PHRASE.sub("", text))]
    found += [m.group(0) for m in _SUBJECT_NOUNS.finditer(text)]
    pieces = _SPLIT.split(text)[::2]
    found += [p.strip(" ,.") for p in pieces if p.strip() and trait_of(p)]
    return list(dict.fromkeys(w for w in found if w))


def clean_caption(raw: str, trigger: str = "") -> str:
    """A captioner's answer as a caption body: its chatter, the trigger word, every phrase about the
    face's identity traits and any character a prompt should not hold removed; "" when nothing is left."""
    text = "".join(ch for ch in str(raw or "") if ch.isprintable() or ch == "\n")
    text = text.replace("\ufffd", "").replace('"', "").replace("*", "").strip()
    text = _CHATTER.sub("", text)
    if trigger:
        text = re.sub(rf"(?<![\w-]){re.escape(trigger)}(?![\w-])", TRIGGER_TOKEN, text, flags=re.I)
    leads = text.startswith(TRIGGER_TOKEN)  # "mila_v1 walks on a beach": the word stays the subject
    text = text.replace(TRIGGER_TOKEN, "")
    parts = _SPLIT.split(text)
    kept: list[str] = []
    for index in range(0, len(parts), 2):
        piece, separator = parts[index], parts[index + 1] if index + 1 < len(parts) else ""
        if trait_of(piece):
            if separator.strip() and kept and not kept[-1].strip():
                kept[-1] = separator  # "a woman with blue eyes, smiling" → "a woman, smiling"
            continue
        kept += [piece, separator]
    text = "".join(kept)
    text = _AGE_PHRASE.sub("", text)
    text = _PERSON_ADJECTIVE.sub("", text)
    text = _SUBJECT_NOUNS.sub(lambda m: m.group(0).split()[0] + " person", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", _SPACES.sub(" ", text))
    text = re.sub(r"([,;:])(?:\s*[,;:.])+", r"\1", text)
    text = re.sub(r"\b(a|an)\s+(?=[,.]|$)", "", text).strip(" ,.;:")
    text = re.sub(r"\b(an)\s+(?=[^aeiouAEIOU\W])", "a ", text)
    text = re.sub(r"\b(a)\s+(?=[aeiouAEIOU])", "an ", text)
    if not re.search(r"[A-Za-z]{2}", text):
        return ""
    text = text if re.match(r"[A-Z]{2}", text) else text[:1].lower() + text[1:]
    text = text[:MAX_CAPTION - 40].rsplit(" ", 1)[0] if len(text) > MAX_CAPTION - 40 else text
    return f"{TRIGGER_TOKEN} {text}" if leads else text


def generated(body: str) -> str:
    """A generated caption as stored: the trigger word first."""
    if body.startswith(TRIGGER_TOKEN):
        return body
    return f"{TRIGGER_TOKEN}, {body}" if body else TRIGGER_TOKEN


def stored(text: str, trigger: str = "") -> str:
    """A caption as the user wrote it, as stored: the trigger word replaced by the placeholder, and put
    first when the text lost it (the trigger word is what the LoRA learns; a caption without it
    trains the base model instead)."""
    text = _SPACES.sub(" ", text).strip()
    if trigger:
        text = re.sub(rf"(?<![\w-]){re.escape(trigger)}(?![\w-])", TRIGGER_TOKEN, text)
    if TRIGGER_TOKEN not in text:
        text = f"{TRIGGER_TOKEN}, {text}" if text else TRIGGER_TOKEN
    return text


def shown(text: str, trigger: str = "") -> str:
    """A stored caption with the trigger word in it (the placeholder itself while none is chosen)."""
    return text.replace(TRIGGER_TOKEN, trigger) if trigger else text


def retrigger(text: str, old: str, new: str) -> str:
    """A caption being edited, shown with another trigger word: `old` (the placeholder when none) becomes
    `new`, and nothing else of the user's unsaved words changes."""
    if old:
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", TRIGGER_TOKEN, text)
    return shown(text, new)


def prompt_caption(prompt) -> str:
    """A sheet image's caption from the edit that made it ("photo of [trigger], close-up portrait,
    smiling warmly"): the prompt already names what changes, and the identity clause is cut."""
    if prompt is None:
        return f"photo of {TRIGGER_TOKEN}"
    text = prompt.prompt.split(". Keep")[0].rstrip(".")
    return f"photo of {TRIGGER_TOKEN}, {text[0].lower()}{text[1:]}"


def record_caption(record: dict) -> str:
    """A sheet image record's stored caption: the one written or edited, else its prompt's."""
    text = record.get("training_caption")
    if isinstance(text, str) and text:
        return text
    return prompt_caption(next((p for p in SHEET_PROMPTS if p.slot == record.get("slot")), None))
