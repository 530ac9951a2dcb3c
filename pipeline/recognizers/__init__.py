"""Recognizers of ours, one per file, that ``policies/pii.yaml`` switches on by name.

Each is a Presidio ``EntityRecognizer`` for text that Presidio's predefined recognizers and the
spaCy NER miss (measured on independent corpora: ``benchmarks/pii_generalisation.py``). Each
anchors on structure (a street-type word, a unit, a digit group with a check digit or a phone
cue, a name cue) and never on a bare capitalised word, so none of them matches everything;
weak matches get a low score that only Presidio's context enhancer lifts above the policy's
minimum (a context word such as "address" or "call" nearby).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.recognizers.card_number import CardNumberRecognizer
from pipeline.recognizers.person_name import PersonCueRecognizer
from pipeline.recognizers.phone_number import PhoneDigitsRecognizer
from pipeline.recognizers.street_address import StreetAddressRecognizer

# policy name -> factory (no arguments: each carries its own patterns and context words)
BUILTIN: dict[str, Callable[[], Any]] = {
    "street_address_block": StreetAddressRecognizer,
    "phone_digits": PhoneDigitsRecognizer,
    "card_number_luhn": CardNumberRecognizer,
    "person_cues": PersonCueRecognizer,
}

# the entity each one reports (the policy must list it under entities)
ENTITY: dict[str, str] = {
    "street_address_block": "STREET_ADDRESS",
    "phone_digits": "PHONE_NUMBER",
    "card_number_luhn": "CREDIT_CARD",
    "person_cues": "PERSON",
}
