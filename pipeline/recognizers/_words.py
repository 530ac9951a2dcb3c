"""The word lists our person recognizers read: first names of every Faker locale, and the
English words of the spaCy package's lemmatizer tables (a word in both is not taken for a name
on its own)."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from pathlib import Path

_NAME = re.compile(r"[^\W\d_][\w'’-]{2,}")
NEVER = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)
# sign-offs and greetings a name is set beside ("Regards, Pauline Giraud", "Best, Tom"), never one
# themselves ("Best" and "Kind" are surnames in Faker's lists)
SIGN_OFFS = frozenset("regards thanks cheers best hi hello dear greetings sincerely yours".split())


def is_english(word: str, english: frozenset[str], lemma: str = "") -> bool:
    """``word``, its lemma or its form without a plural "s" is an English word of ``english``
    ("Logs", "Regards"), or it is a month or a weekday: no name and no foreign street name."""
    folded = word.casefold()
    return folded in NEVER or bool({folded, lemma.casefold(), folded.removesuffix("s")} & english)


@functools.cache
def first_names() -> frozenset[str]:
    """Case-folded first names of every Faker locale (computed once per process, ~0.2 s)."""
    from faker.providers import person

    names: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        try:
            provider = importlib.import_module(f"faker.providers.person.{module.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary", "last_names"):
            value = next((base.__dict__[attr] for base in provider.__mro__ if attr in base.__dict__), None)
            if isinstance(value, dict):
                value = value.keys()
            if isinstance(value, (list, tuple, set, frozenset, type({}.keys()))):
                names.update(n.casefold() for n in value if isinstance(n, str) and _NAME.fullmatch(n))
    return frozenset(names - NEVER)


@functools.cache
def english_words(ner_model: str) -> frozenset[str]:
    """The English word list of the spaCy package's lemmatizer tables (about 83,000 nouns, verbs,
    adjectives, adverbs), read from its files: a lower-case lexicon name that is also an English
    word ("john", "grace", "will") is not taken for a name."""
    import importlib.util

    from spacy.lookups import Lookups

    spec = importlib.util.find_spec(ner_model)
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folders = sorted(Path(spec.submodule_search_locations[0]).glob("*/lemmatizer/lookups"))
    if not folders:
        return frozenset()
    index = Lookups().from_disk(folders[0]).get_table("lemma_index")
    return frozenset(w for pos in index.keys() for w in index[pos])
