"""Person names next to a name that is already found: the rest of it, and the names listed with it.

The small spaCy NER often finds one word of a name it has not seen ("Maile **Jaimes**",
"Follow up with Kaua **Lima**") or one name of a list ("They had 6: Platt, David, Claudia,
**Brenda**, **Jennifer** and **Oscar**"). A seed is a span the NER tags PERSON or a
``person_lexicon`` name. From each seed:

- the name is widened over the words touching it that are part of a name: a capitalised proper
  noun that is no English word (``Maile``, ``Quarantino``), an initial (``Đurđa J Jovanović``),
  a hyphenated part (``Amy-leigh``), but never over a title (``Mrs.`` in "Mrs. Gracie Marsh" stays:
  it is no name, and the evaluation's counterfactuals read the gender it carries);
- a capitalised proper noun or noun that spaCy's parser coordinates with a seed word, or sets
  in apposition to it, is a name too ("Caird and Jones", "Lapresse, Morris and Wright",
  "founders: Waters, Parrish and Stevenson", "They had 6: Maximillia, Wesley, ..."), widened
  the same way.

A line break always ends a name. Nothing is found in a text with no seed, so this recognizer
never matches on its own.
"""

from __future__ import annotations

from typing import Any

from pipeline.recognizers._base import TokenRecognizer
from pipeline.recognizers._words import SIGN_OFFS, english_words, first_names
from pipeline.recognizers.person_lexicon import name_spans

SCORE = 0.5
TITLES = frozenset("mr mrs ms miss mx dr prof sir madam mme herr frau sr sra".split())


def _initial(token: Any) -> bool:
    return len(token.text.rstrip(".")) == 1 and token.text[:1].isupper() and token.text[:1].isalpha()


def _name_part(token: Any, english: frozenset[str]) -> bool:
    """A capitalised proper noun that is no English word, or an initial."""
    if _initial(token):
        return True
    return (
        token.is_alpha
        and token.text[:1].isupper()
        and token.pos_ == "PROPN"
        and not token.is_stop
        and token.text.casefold() not in english
    )


def _title(token: Any) -> bool:
    return token.text.rstrip(".").casefold() in TITLES and token.text[:1].isupper()


def widen(doc: Any, first: int, last: int, english: frozenset[str]) -> tuple[int, int]:
    """Token range [first, last] grown over the name parts, hyphenated parts and title around it."""
    while first > 0:
        before = doc[first - 1]
        if (
            before.text == "-"
            and not before.whitespace_
            and first > 1
            and not doc[first - 2].whitespace_
            and doc[first - 2].is_alpha
        ):
            first -= 2  # Jean-Luc, Amy-leigh
            continue
        if before.whitespace_ != " " or _title(before):
            break  # a title stays: it is no name, and the evaluation reads the gender it carries
        if not _name_part(before, english):
            break
        first -= 1
    while last + 1 < len(doc):
        after = doc[last + 1]
        if (
            after.text == "-"
            and not doc[last].whitespace_
            and not after.whitespace_
            and last + 2 < len(doc)
            and doc[last + 2].is_alpha
        ):
            last += 2
        elif doc[last].whitespace_ == " " and _name_part(after, english):
            last += 1
        else:
            break
    return first, last


def _listable(token: Any, english: frozenset[str]) -> bool:
    """A word that can be a name in a list of names: capitalised, letters only, a proper noun, or
    a noun inside a sentence (spaCy tags unseen surnames either way: "founders: Waters, Parrish
    and Stevenson"; an opening "Regards" or "Thanks" is no name)."""
    if not (token.is_alpha and token.text[:1].isupper() and not token.text.isupper()):
        return False
    if token.is_stop or _title(token) or token.text.casefold() in SIGN_OFFS:
        return False
    if token.pos_ == "NOUN":
        return token.i > 0 and not token.is_sent_start and token.doc[token.i - 1].text not in ".!?\n"
    return token.pos_ == "PROPN"


def listed_with(doc: Any, seeds: set[int], english: frozenset[str]) -> set[int]:
    """Tokens listed with a seed word: its conjuncts ("Caird and Jones"), and a proper noun that is
    no English word in apposition with it ("They had 6: Maximillia, Wesley, ..."), with their
    conjuncts in turn."""
    linked = {c.i for i in seeds for c in doc[i].conjuncts}
    for i in seeds | linked:
        token = doc[i]
        pairs = [token.head] if token.dep_ == "appos" else []
        pairs += [child for child in token.children if child.dep_ == "appos"]
        linked.update(t.i for t in pairs if t.pos_ == "PROPN" and t.text.casefold() not in english)
    linked |= {c.i for i in linked for c in doc[i].conjuncts}
    return {i for i in linked if _listable(doc[i], english)}


def neighbour_spans(doc: Any, english: frozenset[str], lexicon: frozenset[str]) -> list[tuple[int, int]]:
    """Character spans of the seeds (NER PERSON, lexicon names), widened, and of their conjuncts."""
    seeds: list[tuple[int, int]] = [(e.start, e.end - 1) for e in doc.ents if e.label_ == "PERSON"]
    for start, end in name_spans(doc, lexicon, english):
        span = doc.char_span(start, end, alignment_mode="expand")
        if span is not None:
            seeds.append((span.start, span.end - 1))
    seed_tokens = {i for first, last in seeds for i in range(first, last + 1)}
    for i in sorted(listed_with(doc, seed_tokens, english) - seed_tokens):
        seeds.append((i, i))
    out = set()
    for first, last in seeds:
        first, last = widen(doc, first, last, english)
        out.add((doc[first].idx, doc[last].idx + len(doc[last].text)))
    return sorted(out)


class PersonNeighboursRecognizer(TokenRecognizer):
    """The rest of a name the NER or the lexicon found, and the proper nouns coordinated with it."""

    NAME = "person_neighbours"
    SCORE = SCORE
    EXPLANATION = "next to a found name"

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        return neighbour_spans(doc, english_words(self.ner_model), first_names())
