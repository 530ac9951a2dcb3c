"""``regex_needs``: the check a text must pass before a pattern can match in it.

The check may let through a text the pattern then does not match (it is only a filter), but it
must never turn away a text the pattern matches: that would drop a detection. The table rows
pin both directions on small cases; the property tests run every pattern the scrub uses (the
policy's, and the street recognizer's anchors) over real ticket texts and the recognizers' own
table rows, and require every match to pass the check, and the filtered recognizers to give the
same results as the unfiltered ones.
"""

from __future__ import annotations

import re

import pytest
import regex

from pipeline.common.regex_needs import text_can_match
from tests.conftest import REPO

PRESIDIO_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE

ROWS = [
    # pattern, text, can it match (False: the check turns the text away)
    (r"(?<=\bHi )[A-Z]\w+(?=,)", "Hi Bob, thanks", True),
    (r"(?<=\bHi )[A-Z]\w+(?=,)", "hi bob, thanks", True),  # case-insensitive: a superset of the pattern's own flags
    (r"(?<=\bHi )[A-Z]\w+(?=,)", "Hello Bob, thanks", False),  # no "Hi "
    (r"(?<=\bHi )[A-Z]\w+(?=,)", "Hi Bob and thanks", False),  # the lookahead's comma
    (r"\bACCT-\d{7}\b", "account ACCT-1234567", True),
    (r"\bACCT-\d{7}\b", "account ACCT-none", False),  # a digit is needed
    (r"\bACCT-\d{7}\b", "account 1234567", False),  # and the literal run
    (r"(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d{2}", "born in May", False),  # every branch needs a digit
    (r"(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d{2}", "born 3/1985", True),
    (r"x?y", "y", True),  # an optional part needs nothing
    (r"x?y", "x", False),
    (r"a|b", "c", True),  # no literal common to the branches: no check
    (r"(?>ab)c", "abc", True),  # an atomic group's content is needed
    (r"(?>ab)c", "ac", False),
    (r"(?<!Mr )Smith", "Smith", True),  # a negative lookbehind needs nothing
    (r"(?:\d{3} )+[A-Z]", "abc", False),  # a repeat of at least one needs its content
    (r"(?:\d{3} )*[A-Z]", "abc", True),  # zero repeats allowed
    (r"\p{Lu}\w+ 12", "Ana 12", True),  # syntax only the regex module reads: no check at all
    (r"\p{Lu}\w+ 12", "nothing here", True),
]


@pytest.mark.parametrize("pattern,text,expected", ROWS)
def test_text_can_match(pattern, text, expected):
    assert text_can_match(pattern, PRESIDIO_FLAGS, regex)(text) is expected
    if regex.search(pattern, text, PRESIDIO_FLAGS):
        assert expected  # a text the pattern matches is never turned away


def test_a_case_sensitive_pattern_gets_a_check_that_ignores_case():
    """``(?-i:...)`` and patterns without IGNORECASE: a case-insensitive search is still a superset."""
    check = text_can_match(r"(?-i:Box) \d+", re.IGNORECASE)
    assert check("BOX 12") and check("Box 12")
    assert not check("Bo 12")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real ticket texts (the synthesizer's, both fields), the independent corpus's sentences
    (``data/eval/pii_benchmark.jsonl``) and the recognizer tests' own rows."""
    import json

    from pipeline.common.params import load_params
    from pipeline.synthesize import generate
    from tests.test_recognizers import LEXICON_ROWS, ROLE_ROWS
    from tests.test_scrub import NEGATIVE_ROWS, RECOGNIZER_ROWS

    tickets, _ = generate(load_params(REPO / "params.yaml").synthesize.model_copy(update={"rows": 200}))
    rows = [r[0] for r in (*RECOGNIZER_ROWS, *NEGATIVE_ROWS, *LEXICON_ROWS, *ROLE_ROWS)]
    with open(REPO / "data" / "eval" / "pii_benchmark.jsonl", encoding="utf-8") as handle:
        independent = [json.loads(line)["text"] for line in handle]
    return [t[f] for t in tickets for f in ("message", "reply") if t.get(f)] + independent + rows


def policy_patterns() -> list[str]:
    from pipeline.common.policy import load_pii_policy

    return [p for spec in load_pii_policy(REPO / "policies" / "pii.yaml").recognizers for p in spec.patterns]


def test_every_policy_pattern_match_passes_its_check(texts):
    turned_away = 0
    for pattern in policy_patterns():
        check, compiled = text_can_match(pattern, PRESIDIO_FLAGS, regex), regex.compile(pattern, PRESIDIO_FLAGS)
        for text in texts:
            if compiled.search(text):
                assert check(text), f"the check turns away a text that pattern {pattern[:40]!r} matches"
            turned_away += not check(text)
    assert turned_away > len(texts)  # the checks do skip work (the greeting patterns on most texts)


def test_every_street_anchor_match_passes_its_check(texts):
    from pipeline.recognizers.street_address import ANCHOR_NEEDS, ANCHORS

    for (pattern, _), check in zip(ANCHORS, ANCHOR_NEEDS, strict=True):
        for text in texts:
            if pattern.search(text):
                assert check(text), f"the check turns away a text that anchor {pattern.pattern[:40]!r} matches"


def test_filtered_recognizers_find_what_unfiltered_ones_find(texts, monkeypatch):
    """The policy's pattern recognizers and the street recognizer, with and without their checks."""
    from presidio_analyzer import PatternRecognizer

    from pipeline.common.pii import build_recognizer
    from pipeline.common.policy import load_pii_policy
    from pipeline.recognizers import street_address

    policy = load_pii_policy(REPO / "policies" / "pii.yaml")
    entities = list(policy.entities)

    def found(results):
        return [(r.start, r.end, r.entity_type, r.score) for r in results]

    for spec in policy.recognizers:
        recognizer = build_recognizer(spec)
        for text in texts:
            filtered = found(recognizer.analyze(text, entities))
            assert filtered == found(PatternRecognizer.analyze(recognizer, text, entities)), spec.name
        assert len(recognizer.patterns) == len(spec.patterns)  # the full list is back after each call

    street = street_address.StreetAddressRecognizer()
    filtered = [street.spans(text) for text in texts]
    monkeypatch.setattr(street_address, "ANCHOR_NEEDS", tuple(lambda _t: True for _ in street_address.ANCHORS))
    assert filtered == [street.spans(text) for text in texts]
    assert any(filtered)


def test_detect_vs_ref_counts_what_differs():
    """The benchmark that proves the filters change no detection must see a difference when there is one."""
    from benchmarks.detect_vs_ref import compare

    same = [[[0, 3, "PERSON", 0.85]], []]
    assert compare(same, same)["identical"] is True
    moved = [[[0, 4, "PERSON", 0.85]], [[5, 9, "PHONE_NUMBER", 0.4]]]
    result = compare(moved, same)
    assert result == {"identical": False, "texts_differing": 2, "detections_only_this": 2, "detections_only_ref": 1,
                      "detections_this": 2, "detections_ref": 1}  # fmt: skip
    rescored = [[[0, 3, "PERSON", 0.5]], []]  # the same span with another score is a difference too
    assert compare(rescored, same)["texts_differing"] == 1
