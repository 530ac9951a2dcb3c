"""Person names by lexicon: a known first name that spaCy tags as a proper noun, plus the
surname or initials after it.

The small spaCy NER misses many names it has not seen (``Leigha``, ``Csanád``) or files them
under ORG/GPE. The lexicon is the union of the first names of every locale Faker ships (about
26,000 in Latin, Cyrillic, Greek, Arabic and other scripts; Faker is already a dependency and
MIT-licensed). A lexicon word alone never counts: spaCy's tagger must read the token as a
proper noun (``PROPN``), so "Will you call" or "Mark it done" stay, while "ask Will about it"
goes; or, in lower case, the word must be no English word (the spaCy package's own lemmatizer
word list), so "stefania" goes and "grace" stays. A name that is also an English word and opens
a sentence counts only as the subject of a verb or an addressee ("Gregory had given",
"Sue, can I"), never as a modifier or a verb ("Grace period", "Mark it done"). Month and weekday names are never names here. Capitalised words and initials that follow
are taken into the name (``Brodie H Walker``, ``Helena Gregorová``).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.recognizers._base import TokenRecognizer
from pipeline.recognizers._words import SIGN_OFFS, english_words, first_names

SCORE = 0.5
MAX_FOLLOWING = 2  # surname words or initials taken after the first name


def _initial(token: Any) -> bool:
    return bool(re.fullmatch(r"[A-Z]\.?", token.text))


def _surname(token: Any, lower: bool = False) -> bool:
    """A word after a first name (spaCy often tags unseen surnames NOUN or ADJ); capitalised,
    or in lower case after a lower-case first name."""
    cased = token.text[:1].isupper() or (lower and token.text.islower())
    return cased and token.is_alpha and not token.is_stop and (token.pos_ in ("PROPN", "NOUN", "ADJ", "X"))


OPENERS = frozenset('.!?:;"“(')


def _opens_sentence(token: Any) -> bool:
    """First word of the text, a sentence or a line (a comma does not open one: "Platt, David")."""
    doc = token.doc
    if token.i == 0:
        return True
    before = doc[token.i - 1]
    return (
        before.text in OPENERS or before.is_space or "\n" in before.text or (token.is_sent_start and before.text != ",")
    )


def _name_start(token: Any, lexicon: frozenset[str], english: frozenset[str]) -> bool:
    """A capitalised lexicon name read as a proper noun, or one in lower case that is no English word."""
    word = token.text.casefold()
    if word not in lexicon:
        return False
    if token.pos_ == "PROPN" and token.text[:1].isupper():
        # an English word that opens a sentence or a line ("Kind regards", "Grace period") is read
        # as the word, unless it acts as a person there
        return word not in english or not _opens_sentence(token) or _acts_as_person(token)
    if token.pos_ == "NOUN" and token.text[:1].isupper() and _opens_sentence(token):
        return _acts_as_person(token)  # spaCy tags some opening names NOUN: "Rebecca is ...", "Florence, can I"
    return token.text.islower() and token.is_alpha and word not in english and not token.is_stop


def _acts_as_person(token: Any) -> bool:
    """A sentence's opening name that is also an English word ("Rebecca", "Gregory", "Sue") is a
    name when it is the subject of a verb ("Gregory had given ...") or the addressee before a
    comma ("Sue, can I ..."); as the word it is a modifier, a verb or an auxiliary ("Grace
    period", "Mark it", "Will you")."""
    doc = token.doc
    # a noun subject only where the NER sees a name in it ("Rebecca is ..."; "Bill is wrong" stays)
    subject = (
        token.dep_ in ("nsubj", "nsubjpass")
        and token.head.pos_ in ("VERB", "AUX")
        and (token.pos_ == "PROPN" or bool(token.ent_type_))
    )
    addressee = (
        token.i + 1 < len(doc)
        and doc[token.i + 1].text == ","
        and token.pos_ in ("PROPN", "NOUN")
        and token.text.casefold() not in SIGN_OFFS  # "Best, Tom": the sign-off, not Tom's addressee
    )
    return subject or addressee


def name_spans(doc: Any, lexicon: frozenset[str], english: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """Character spans of lexicon names (see ``_name_start``), with the surname words after them."""
    out = []
    i = 0
    while i < len(doc):
        token = doc[i]
        if _name_start(token, lexicon, english):
            end = i
            while end + 1 < len(doc) and end - i < MAX_FOLLOWING + 2:
                if _surname(doc[end + 1], token.text.islower()) or _initial(doc[end + 1]):
                    end += 1
                elif (
                    end + 2 < len(doc)
                    and doc[end + 1].text == "-"
                    and not doc[end].whitespace_
                    and not doc[end + 1].whitespace_
                    and _surname(doc[end + 2])
                ):
                    end += 2  # a double-barrelled surname: Morley-Griffiths
                else:
                    break
            out.append((token.idx, doc[end].idx + len(doc[end].text)))
            i = end + 1
        else:
            i += 1
    return out


class PersonLexiconRecognizer(TokenRecognizer):
    """Known first names read as proper nouns by spaCy's tagger, with their surnames."""

    NAME = "person_lexicon"
    SCORE = SCORE
    EXPLANATION = "first-name lexicon, PROPN"

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        return name_spans(doc, first_names(), english_words(self.ner_model))
