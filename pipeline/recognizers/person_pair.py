"""Person names as two unknown proper nouns in a row: a given name and a surname no list holds.

The small spaCy NER misses names from outside its training data ("The **Bulat Kadiev** version",
"was called **Aloisa Toscano**", "the verses from **Shun Roeterdink**'s Cautionary Tales"), and
the first-name lexicon cannot hold every given name. Two capitalised words in a row, each no
English word (the spaCy package's lemmatizer list, also after an inflection: "Logs"), no stop
word, not in upper case (an acronym), both read as proper nouns (one of them may be a noun or an
adjective: spaCy tags unseen surnames either way), are taken for a name; so is a first name of
the lexicon that is also an English word before such a proper noun ("**Marina Yegorova** of
Altimar"); unless

- the NER reads them together as one place (``Costa Rica``, ``Buenos Aires``), a product, a
  facility, a law, a language, a quantity or a date;
- a company word follows them (``Potlatch Exmoor Corp``, ``Altimar Holdings AG``);
- a line break or anything but one space separates them.

Products whose name is two words that are no English word ("Zendesk Gather") are taken too: that
costs a product name and never a person's (docs/data-governance.md).
"""

from __future__ import annotations

from typing import Any

from pipeline.recognizers._base import TokenRecognizer
from pipeline.recognizers._words import english_words, first_names, is_english

SCORE = 0.45
NOT_PEOPLE = frozenset({"FAC", "PRODUCT", "LAW", "LANGUAGE", "MONEY", "QUANTITY", "PERCENT", "DATE", "TIME", "CARDINAL",
                        "ORDINAL", "EVENT", "WORK_OF_ART"})  # fmt: skip
PLACES = frozenset({"GPE", "LOC", "NORP"})
COMPANY = frozenset(
    "corp corporation inc incorporated ltd limited llc llp plc ag gmbh kg sa sas sarl spa srl nv bv ab as oy "
    "co company group holdings holding bank partners capital fund trust industries systems technologies labs "
    "foundation university institute hospital hotel airlines airways motors".split()
)


def unknown_proper(token: Any, english: frozenset[str]) -> bool:
    """A capitalised word of two or more letters, no English word, no stop word, not upper case."""
    text = token.text
    return (
        token.is_alpha and len(text) >= 2 and text[:1].isupper() and not text.isupper() and not token.is_stop
        and not is_english(text, english, token.lemma_)
        and token.pos_ in ("PROPN", "NOUN", "ADJ", "X") and token.ent_type_ not in NOT_PEOPLE
    )  # fmt: skip


def _one_place(first: Any, second: Any) -> bool:
    """Both words inside one place entity of the NER."""
    return first.ent_type_ in PLACES and second.ent_type_ == first.ent_type_ and second.ent_iob_ == "I"


def _given(token: Any, lexicon: frozenset[str]) -> bool:
    """A lexicon first name read as a proper noun, also one that is an English word ("Marina")."""
    return (
        token.pos_ == "PROPN"
        and token.text[:1].isupper()
        and not token.text.isupper()
        and token.text.casefold() in lexicon
    )


def pair_spans(doc: Any, english: frozenset[str], lexicon: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """Character spans of two unknown proper nouns in a row (see the module's docstring)."""
    out = []
    i = 0
    while i + 1 < len(doc):
        first, second = doc[i], doc[i + 1]
        after = doc[i + 2] if i + 2 < len(doc) else None
        if (
            first.whitespace_ == " "
            and "PROPN" in (first.pos_, second.pos_)
            and (unknown_proper(first, english) or (_given(first, lexicon) and second.pos_ == "PROPN"))
            and unknown_proper(second, english)
            and not _one_place(first, second)
            and not (after is not None and after.text.rstrip(".").casefold() in COMPANY)
        ):
            out.append((first.idx, second.idx + len(second.text)))
            i += 2
        else:
            i += 1
    return out


class PersonPairRecognizer(TokenRecognizer):
    """Two capitalised proper nouns in a row that are no English words: a given name and a surname."""

    NAME = "person_pair"
    SCORE = SCORE
    EXPLANATION = "two unknown proper nouns in a row"

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        return pair_spans(doc, english_words(self.ner_model), first_names())
