"""Person names that no lexicon knows, found by the part they play in the sentence.

The small spaCy NER misses many names it has never seen, and the first-name lexicon cannot list
them all ("**Nurishat** had given ...", "**Thorkildsen** began writing", "**Ezechiele** is from
..."). spaCy's parser still reads such a word as the subject or object of a verb. A name here is
a capitalised word that

- is no English word (the spaCy package's lemmatizer list), no stop word, not in upper case, not
  a month or a weekday, and has at least three letters;
- is the subject (``nsubj``, ``nsubjpass``), indirect object (``dative``) or direct object
  (``dobj``) of a verb, the owner in a possessive ("Junsaku **Hayashida**'s Tales"), or the
  addressee that opens a sentence ("**Renátó**, can I ..."), with the capitalised non-English
  words compounded before it ("**Mitchell Nielsen** listed ...");
- is not part of a facility, product, law or language entity of the NER, nor of a place entity
  unless something marks a person (spaCy's small model types most unseen names as places:
  "**Shamhan** lives on ...", "**Selam** is very reliable. You can always depend on him."), and not
  a compound inside a longer proper-noun phrase (a company: "Potlatch **Corp**").

Two such words around a middle initial are a name wherever they stand ("**Mimount Y Bijster**
from ..."), and so is one right before a noun of an authored work or a family ("the **Antall**
novel", "the **Okafor** family"). An English word in that role ("Orders are late") is never taken here, so the products
and phrases of ordinary text stay; a brand that is no English word and acts as a subject
("Spotify crashed") is taken, which costs a word of text and never a name.
"""

from __future__ import annotations

from typing import Any

from pipeline.recognizers._base import TokenRecognizer
from pipeline.recognizers._words import english_words, is_english

ROLES = frozenset({"nsubj", "nsubjpass", "dative", "dobj"})
NOT_PEOPLE = frozenset(
    {"FAC", "PRODUCT", "LAW", "LANGUAGE", "MONEY", "QUANTITY", "PERCENT", "DATE", "TIME", "CARDINAL", "ORDINAL"}
)
# spaCy's small model types most unseen names as places: such a word counts only with a sign of a
# person (a verb only people do, a pronoun "he"/"she" after it, being given something)
PLACE_TYPES = frozenset({"GPE", "LOC", "NORP"})
PERSON_VERBS = frozenset(
    "live say tell write call give ask reply answer want need work begin spend list send speak sing marry die born".split()
)
# nouns whose proper-noun modifier is a person: authored works and families
WORKS = frozenset(
    "novel novels book books song songs album poem poems memoir biography painting portrait play "
    "concert concerts lecture family household wedding funeral".split()
)
PRONOUNS = frozenset("he she him her his hers himself herself".split())


def unknown_name(token: Any, english: frozenset[str], any_entity: bool = False) -> bool:
    """A capitalised word of three or more letters that is no English word (nor the inflection of one:
    "Logs", "Regards") and not upper case; nor part of a facility, product, ... entity unless ``any_entity``."""
    text = token.text
    return (
        token.is_alpha and len(text) >= 3 and text[:1].isupper() and not text.isupper() and not token.is_stop
        and not is_english(text, english, token.lemma_) and (any_entity or token.ent_type_ not in NOT_PEOPLE)
    )  # fmt: skip


def _addressee(token: Any) -> bool:
    """A word spoken to, before a comma: opening a sentence ("Renátó, can I speak ...?") or right
    after an object pronoun ("to leave me Towa, four hungry children")."""
    doc = token.doc
    before = doc[token.i - 1] if token.i else None
    opens = before is None or before.text in '.!?"“\n' or before.is_space
    after_pronoun = before is not None and before.lower_ in ("me", "us", "you")
    return (
        (opens or after_pronoun)
        and token.i + 1 < len(doc)
        and doc[token.i + 1].text == ","
        and token.pos_ in ("PROPN", "NOUN")
    )


def _person_sign(token: Any) -> bool:
    """The word is given something, spoken to, is "from" somewhere, its verb is one only people
    do, or "he"/"she" stands in its sentence, the one before or the one after ("He's injured
    ..., but Borislava just has to ...")."""
    if token.dep_ == "dative" or token.head.lemma_ in PERSON_VERBS or _addressee(token):
        return True
    if token.dep_ == "nsubj" and token.head.lemma_ == "be" and any(c.lower_ == "from" for c in token.head.children):
        return True  # "Itamar is from Potlatch Corp": a place is not from somewhere
    sents = list(token.doc.sents)
    here = next(i for i, sent in enumerate(sents) if sent.start <= token.i < sent.end)
    near = [t for sent in sents[max(0, here - 1) : here + 2] for t in sent if t.i != token.i]
    return any(t.lower_ in PRONOUNS for t in near)


def role_spans(doc: Any, english: frozenset[str]) -> list[tuple[int, int]]:
    """Character spans of unknown names acting as a verb's subject or object, or as an addressee."""
    out = []
    for token in doc:
        if token.dep_ in ("compound", "amod"):
            # whatever the NER calls the word before "novel" ("the Obad novel" is no facility)
            first = _author_of(token, english) if unknown_name(token, english, any_entity=True) else None
            if first is not None:
                out.append((doc[first].idx, token.idx + len(token.text)))
            continue
        if not unknown_name(token, english):
            continue
        in_role = token.dep_ in ROLES and token.head.pos_ in ("VERB", "AUX")
        if not (in_role or _addressee(token) or _possessor(token)):
            continue
        if token.ent_type_ in PLACE_TYPES and not _person_sign(token):
            continue
        first = token.i
        while (
            first > 0
            and doc[first - 1].dep_ == "compound"
            and doc[first - 1].head.i == token.i
            and unknown_name(doc[first - 1], english)
        ):
            first -= 1
        if any(child.dep_ == "compound" and child.i < first for child in token.children):
            continue  # a longer proper-noun phrase with an English word in it: a company or a product
        out.append((doc[first].idx, token.idx + len(token.text)))
    return out + initialled_spans(doc, english)


def _author_of(token: Any, english: frozenset[str]) -> int | None:
    """The first token of the name that says whose work or family a noun is: "the **Antall**
    novel", "a **Ilya Bodrov** concert", "the **Okafor** family" (a brand rarely modifies these
    nouns; it does "app", "account", "version"); None if ``token`` is not one."""
    doc, head = token.doc, token.head
    if not (head.pos_ == "NOUN" and head.lemma_.casefold() in WORKS and token.i == head.i - 1):
        return None
    first = token.i
    while first > 0 and unknown_name(doc[first - 1], english):
        first -= 1  # the given name before the surname
    before = doc[first - 1] if first else None
    # the / a / their Antall novel (spaCy tags the name as a proper noun, a noun or an adjective)
    if before is not None and before.pos_ in ("DET", "PRON") and token.pos_ in ("PROPN", "NOUN", "ADJ"):
        return first
    return None


def _possessor(token: Any) -> bool:
    """The word owns something: "Junsaku **Hayashida**'s Cautionary Tales"."""
    return token.dep_ == "poss" and any(c.dep_ == "case" for c in token.children)


def _initial(token: Any) -> bool:
    """One capital letter, with or without a full stop: "Y", "S.", "Á"."""
    letter = token.text.removesuffix(".")
    return len(letter) == 1 and letter.isupper()


def initialled_spans(doc: Any, english: frozenset[str]) -> list[tuple[int, int]]:
    """Two unknown capitalised proper nouns around a middle initial: "Mimount Y Bijster"."""
    out = []
    for i in range(len(doc) - 2):
        first, middle, last = doc[i], doc[i + 1], doc[i + 2]
        if (
            _initial(middle)
            and first.whitespace_
            and middle.whitespace_
            and all(t.pos_ == "PROPN" and unknown_name(t, english) for t in (first, last))
        ):
            out.append((first.idx, last.idx + len(last.text)))
    return out


class PersonRoleRecognizer(TokenRecognizer):
    """Unknown capitalised words that act as a person: a verb's subject or object, an addressee."""

    NAME = "person_role"
    SCORE = 0.45
    EXPLANATION = "unknown capitalised word as subject, object or addressee"

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        return role_spans(doc, english_words(self.ner_model))
