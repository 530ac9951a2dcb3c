"""Driving-licence numbers, found by the words that announce them.

US states alone use some fifty licence formats (``A25064207``, ``217223320``, ``m472269848583``,
``yo0047868``), and other countries more; a pattern per format would match every order number.
Presidio's ``UsLicenseRecognizer`` scores plain digits 0.01, which even its context enhancer
cannot lift to a policy's minimum. A licence number here is one token of letters and digits
(at least five digits, at most 16 characters, no more than two letters before the first
digit) that follows a licence cue: ``driver's license``, ``driving licence``, ``DL``, ``licence
no.``, with ``number``, ``no.``, ``#``, ``is`` or a colon between them. The cue alone, or a
cue followed by a word, never matches; a licence key or a software licence count is no
driving licence.
"""

from __future__ import annotations

import re

from pipeline.recognizers._base import SpanRecognizer

_LICENCE = r"(?:licen[cs]e|lic\.?)"
CUE = (
    rf"\b(?:(?:driver'?s?|driving|drivers'|motorist'?s?)[ -]{_LICENCE}|\bDL|\bCDL)"
    rf"(?:[ \t]+(?:number|num\.?|no\.?|#|id))?(?:[ \t]*(?:is|was|=|:|#)[ \t]*|[ \t]+)"
)
NUMBER = r"(?P<n>(?<![\w-])[A-Za-z]{0,2}[ -]?\d[\dA-Za-z-]{3,14}(?![\w-]))"
PATTERN = re.compile(CUE + NUMBER, re.IGNORECASE)
SCORE = 0.85


class LicenceNumberRecognizer(SpanRecognizer):
    """A letters-and-digits token right after a driving-licence cue."""

    ENTITY = "US_DRIVER_LICENSE"
    NAME = "licence_number"

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        out = []
        for m in PATTERN.finditer(text):
            number = m.group("n")
            if sum(c.isdigit() for c in number) >= 5 and len(number) <= 16:
                out.append((m.start("n"), m.end("n"), SCORE))
        return out
