"""Recognizers of ours, one per file, that ``policies/pii.yaml`` switches on by name.

Each is a Presidio ``EntityRecognizer`` for text that Presidio's predefined recognizers and the
spaCy NER miss (measured on independent corpora: ``benchmarks/pii_generalisation.py``). Each
anchors on structure (a street-type word, a unit, a digit group with a check digit or a phone
cue, a name cue) and never on a bare capitalised word, so none of them matches everything;
weak matches get a low score that only Presidio's context enhancer lifts above the policy's
minimum (a context word such as "address" or "call" nearby).
"""

from __future__ import annotations

import importlib
from typing import Any

# policy name -> (module, class); imported only when an analyzer is built, so that validating a
# policy (``govtune policy lint``) does not load Presidio
BUILTIN: dict[str, tuple[str, str]] = {
    "street_address_block": ("street_address", "StreetAddressRecognizer"),
    "phone_digits": ("phone_number", "PhoneDigitsRecognizer"),
    "card_number_luhn": ("card_number", "CardNumberRecognizer"),
    "person_cues": ("person_name", "PersonCueRecognizer"),
    "person_lexicon": ("person_lexicon", "PersonLexiconRecognizer"),
    "person_neighbours": ("person_neighbours", "PersonNeighboursRecognizer"),
    "person_role": ("person_role", "PersonRoleRecognizer"),
}

# the entity each one reports (the policy must list it under entities)
ENTITY: dict[str, str] = {
    "street_address_block": "STREET_ADDRESS",
    "phone_digits": "PHONE_NUMBER",
    "card_number_luhn": "CREDIT_CARD",
    "person_cues": "PERSON",
    "person_lexicon": "PERSON",
    "person_neighbours": "PERSON",
    "person_role": "PERSON",
}


WORD_LIST_USERS = frozenset({"person_lexicon", "person_neighbours", "person_role"})


def build(name: str, ner_model: str) -> Any:
    """A new instance of the recognizer the policy calls ``name`` (the person recognizers read
    the spaCy package ``ner_model``'s English word list)."""
    module, cls = BUILTIN[name]
    recognizer = getattr(importlib.import_module(f"pipeline.recognizers.{module}"), cls)
    return recognizer(ner_model) if name in WORD_LIST_USERS else recognizer()
