"""Phone numbers as digit groups, for the formats ``phonenumbers`` rejects without a region.

Presidio's ``PhoneRecognizer`` validates numbers with ``phonenumbers`` for a few regions, so
local and foreign formats (``76 177 296``, ``0494 41 18 24``, ``(72) 583-350``,
``650-752-7354x549``) go through. This one matches 6 to 15 digits in groups (optional ``+``
country code, area code in brackets, extension) and scores them by how phone-like they are:
an international prefix (``+`` or ``00``, also before one unbroken run: ``0041422401234``) or an
extension is enough on its own; plain digit groups count only
with a phone word nearby ("call", "mobile", "fax", ...), which Presidio's context enhancer
finds. Dates, times, IP addresses and decimals are never phones.
"""

from __future__ import annotations

import re

from pipeline.recognizers._base import SpanRecognizer

PHONE = re.compile(
    r"(?:(?<=\\n)|(?<![\w+.\-/]))(?:\+\d{1,3}[ .-]?(?:\(0\)[ ]?)?)?(?:\(\d{1,5}\)[ .-]?)?(?:00\d{7,13}|\d{2,8})(?:[ .-]\d{2,8}){0,5}"
    r"(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,5})?(?![\w/])(?!\.\d)",
    re.IGNORECASE,
)
NOT_PHONE = re.compile(
    r"^(?:\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,3}(?:\.\d{1,3}){3}|\d{1,2}:\d{2}|(?:19|20)\d{2})$"
)
MIN_DIGITS, MAX_DIGITS = 6, 15
# phone words right before or after the number; "call" is a spaCy stop word, which Presidio's
# context enhancer skips, so the cues are checked here as well
CUE_BEFORE = re.compile(
    r"\b(?:call(?:ed|ing)?(?: me| us| them| him| her)?(?: back)?(?: on| at)?|phone|mobile|cell|tel|telephone|fax|desk|office|"
    r"reach(?: me| us)?(?: on| at)?|ring|dial|whatsapp|sms|text(?: me)?|messages? to|answering at|registered|contact|switchboard|number|"
    r"number (?:changed|is now|has changed)(?: to)?|call(?: [^\W\d_][\w'-]*){1,3} (?:on|at))\b[^\w\n]{0,6}(?:(?:is|on|at|:)[^\w\n]{0,3})?(?:\\n)?$",
    re.IGNORECASE,
)
CUE_AFTER = re.compile(r"[ -]{0,3}\(?(?:office|fax|mobile|cell|home|work|desk|phone|tel)\b", re.IGNORECASE)
CUED = 0.5


def _international(number: str) -> bool:
    """``00`` and a country code, in spaced groups or one run: 0044 20 7946 0958, 00724078754
    (not a dashed id that starts with zeros, such as the SSN 004-51-5722)."""
    return number.startswith("00") and "-" not in number and "." not in number and sum(c.isdigit() for c in number) >= 9


def score_of(number: str) -> float:
    """0 = not a phone; 0.6 = phone on its own; 0.25 = phone only with a phone word nearby."""
    digits = sum(c.isdigit() for c in number)
    if not MIN_DIGITS <= digits <= MAX_DIGITS or NOT_PHONE.match(number):
        return 0.0
    if (
        number.startswith("+")
        or _international(number)
        or re.search(r"(?:x|ext)\.? ?\d+$", number, re.IGNORECASE)
        or number.startswith("(")
    ):
        return 0.6
    if " " not in number and "-" not in number and "." not in number:
        return 0.25 if digits >= 7 else 0.0  # one unbroken run: an id as often as a phone
    return 0.25


class PhoneDigitsRecognizer(SpanRecognizer):
    """Digit groups shaped like a phone number; plain ones need a phone word nearby."""

    ENTITY = "PHONE_NUMBER"
    NAME = "phone_digits"
    CONTEXT = ("phone", "mobile", "cell", "tel", "telephone", "fax", "desk", "office", "reach", "ring",
               "dial", "whatsapp", "sms", "text", "messag", "contact", "answer", "switchboard", "landline")  # fmt: skip

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        out = []
        for m in PHONE.finditer(text):
            score = score_of(m.group(0))
            if (
                score
                and score < CUED
                and (CUE_BEFORE.search(text, max(0, m.start() - 40), m.start()) or CUE_AFTER.match(text, m.end()))
            ):
                score = CUED
            if score:
                out.append((m.start(), m.end(), score))
        return out
