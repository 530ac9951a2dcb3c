"""Payment card numbers of any length ISO/IEC 7812 allows (12 to 19 digits) that pass Luhn.

Presidio's ``CreditCardRecognizer`` knows 13- to 16-digit layouts of a few networks, so
19-digit Visa, 12-digit Maestro or unusual groupings go through. This one takes any run of 12
to 19 digits (single spaces or dashes between groups allowed) whose Luhn check digit is right.
One in ten random digit strings passes Luhn, so a number counts only with a card word nearby
("card", "cc", "visa", ...), which Presidio's context enhancer finds.
"""

from __future__ import annotations

import re

from pipeline.common.check_digits import luhn_ok
from pipeline.recognizers._base import SpanRecognizer

CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d-])")


class CardNumberRecognizer(SpanRecognizer):
    """12-19 digit numbers with a valid Luhn digit; they count with a card word nearby."""

    ENTITY = "CREDIT_CARD"
    NAME = "card_number_luhn"
    CONTEXT = (
        "card",
        "cc",
        "credit",
        "debit",
        "visa",
        "mastercard",
        "maestro",
        "amex",
        "charged",
        "payment",
        "pan",
        "cardholder",
    )
    SCORE = 0.3

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        return [(m.start(), m.end(), self.SCORE) for m in CARD.finditer(text) if luhn_ok(m.group(0))]
