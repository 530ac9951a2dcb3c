"""Recognizers of ours, one per file, that ``policies/pii.yaml`` switches on by name.

Each is a Presidio ``EntityRecognizer`` for text that Presidio's predefined recognizers and the
spaCy NER miss (measured on independent corpora: ``benchmarks/pii_generalisation.py``). Each
anchors on structure (a street-type word, a unit, a digit group with a check digit or a phone
cue, a name cue) and never on a bare capitalised word, so none of them matches everything;
weak matches get a low score that only Presidio's context enhancer lifts above the policy's
minimum (a context word such as "address" or "call" nearby).
"""

from __future__ import annotations

# policy name -> (module, class); imported only when an analyzer is built
# (``pipeline.common.pii.builtin_recognizer``), so that validating a policy does not load Presidio
BUILTIN: dict[str, tuple[str, str]] = {
    "street_address_block": ("street_address", "StreetAddressRecognizer"),
    "phone_digits": ("phone_number", "PhoneDigitsRecognizer"),
    "card_number_luhn": ("card_number", "CardNumberRecognizer"),
    "person_cues": ("person_name", "PersonCueRecognizer"),
    "person_lexicon": ("person_lexicon", "PersonLexiconRecognizer"),
    "person_neighbours": ("person_neighbours", "PersonNeighboursRecognizer"),
    "person_role": ("person_role", "PersonRoleRecognizer"),
    "licence_number": ("licence_number", "LicenceNumberRecognizer"),
    "person_pair": ("person_pair", "PersonPairRecognizer"),
    "person_surname": ("person_surname", "PersonSurnameRecognizer"),
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
    "licence_number": "US_DRIVER_LICENSE",
    "person_pair": "PERSON",
    "person_surname": "PERSON",
}

# the ones that read the spaCy package's English word list (``_words.english_words``)
WORD_LIST_USERS = frozenset(
    {"person_lexicon", "person_neighbours", "person_role", "person_pair", "person_surname", "street_address_block"}
)
