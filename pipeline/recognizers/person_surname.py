"""Surnames by their ending: one capitalised word that no list holds, shaped like a family name.

Many family names carry their language's surname ending: patronymics and their female forms
(``Friðfinnsson``, ``Jóhannsdóttir``, ``Kadiev``, ``Yegorova``, ``Tokaryev``), the South Slavic
``-ović``/``-ić``, the Polish ``-ski``/``-wicz``, the Ukrainian ``-enko``/``-chuk``, the Greek
``-opoulos``/``-akis``, the Romanian ``-escu``, the Georgian ``-shvili``/``-adze``, the Turkish
``-oğlu``, the Armenian ``-yan``. spaCy's small NER reads such words as organisations or places
when they stand alone ("This song by ex-Zombie **Mojsilović**"). A surname here is a capitalised
word with one of these endings after at least three letters (four before ``-ov``, ``-ev``,
``-ova``, ``-eva``, ``-sen``, ``-ich``, which end other words too) that is no English word, no
stop word, not in upper case and not inside a law, language, number or date entity. Towns with such
endings ("Rostov", "Saratov") are taken too: that costs a place name, never a person's.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.recognizers._base import TokenRecognizer
from pipeline.recognizers._words import english_words, is_english

SCORE = 0.45
ENDINGS = (
    "ović ovič ević evič vić ić ich ovich evich ovna evna "  # South Slavic, East Slavic patronymics
    "sson dóttir dottir sdottir sen "  # Nordic patronymics
    "ov ova ová ev eva yev yeva iev ieva "  # Russian, Bulgarian, Czech and Slovak female forms
    "enko chenko chuk czuk yuk ski ska sky skiy skaya skyi cki cka wicz owicz ewicz "  # Ukrainian, Polish
    "opoulos poulos akis idis iadis "  # Greek
    "escu "  # Romanian
    "shvili adze dze "  # Georgian
    "oğlu oglu "  # Turkish
    "yan "  # Armenian
    "bayev bekov"  # Central Asian
).split()
_ENDING = re.compile("(?:" + "|".join(sorted(ENDINGS, key=len, reverse=True)) + ")$")
# letters a word needs before its ending: three, and four before the endings of many other words
STEM, LOOSE_STEM = 3, 4
_LOOSE = frozenset({"ich", "sen", "ov", "ev", "ova", "eva"})
# the NER's guess for an unseen surname is often a facility or a product ("to Kovalenko", "the
# Čerkez novel"): the ending outweighs it; only languages, laws, numbers and dates rule a word out
NOT_PEOPLE = frozenset({"LAW", "LANGUAGE", "MONEY", "QUANTITY", "PERCENT", "DATE", "TIME", "CARDINAL", "ORDINAL"})


def surname(token: Any, english: frozenset[str]) -> bool:
    """A capitalised unknown word with a surname ending (see the module's docstring)."""
    text = token.text
    word = text.casefold()
    if not (token.is_alpha and text[:1].isupper() and not text.isupper()):
        return False
    if token.is_stop or is_english(text, english, token.lemma_):
        return False
    if token.ent_type_ in NOT_PEOPLE or token.pos_ not in ("PROPN", "NOUN", "ADJ", "X"):
        return False
    m = _ENDING.search(word)
    return m is not None and len(word) - len(m.group(0)) >= (LOOSE_STEM if m.group(0) in _LOOSE else STEM)


def surname_spans(doc: Any, english: frozenset[str]) -> list[tuple[int, int]]:
    """Character spans of the words shaped like surnames."""
    return [(t.idx, t.idx + len(t.text)) for t in doc if surname(t, english)]


class PersonSurnameRecognizer(TokenRecognizer):
    """Capitalised words that are no English word and end like a family name."""

    NAME = "person_surname"
    SCORE = SCORE
    EXPLANATION = "surname ending, no English word"

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        return surname_spans(doc, english_words(self.ner_model))
