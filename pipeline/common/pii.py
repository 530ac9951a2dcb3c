"""Presidio engines built from ``policies/pii.yaml``: detect, replace, re-scan.

Used by the scrub stage, and by every later step that must treat text the way training data
was treated (counterfactual variants, generated outputs, monitored batches). Nothing here
logs or returns a detected value: detections are positions, entity types and scores.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.common.check_digits import iban_ok, luhn_ok
from pipeline.common.keys import PseudonymKey, keyed_digest, pseudonym
from pipeline.common.policy import PiiPolicy, RecognizerPolicy
from pipeline.common.regex_needs import text_can_match

# Text our operators put in place of PII; the residual re-scan ignores detections inside it.
_TAG = re.compile(r"<[A-Z_]+(?:_[0-9a-f]{10})?>|\*{4,}|\b[0-9a-f]{64}\b")


@dataclass(frozen=True)
class Detection:
    """One detected span: ``text[start:end]`` looks like ``entity`` with ``score``."""

    start: int
    end: int
    entity: str
    score: float


VALIDATORS: dict[str, Callable[[str], bool]] = {"luhn": luhn_ok, "iban": iban_ok}


def build_recognizer(spec: RecognizerPolicy) -> Any:
    """A Presidio PatternRecognizer from a policy entry (with an optional check-digit validator)."""
    import regex as regex_engine  # the engine PatternRecognizer compiles with
    from presidio_analyzer import Pattern, PatternRecognizer

    validator = VALIDATORS.get(spec.validator) if spec.validator else None

    class PolicyPatternRecognizer(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool | None:
            return validator(pattern_text) if validator else None

        def analyze(
            self, text: str, entities: list[str], nlp_artifacts: Any = None, regex_flags: int | None = None
        ) -> list[Any]:
            """Runs only the patterns that can match ``text`` (``regex_needs``): the same results,
            without scanning a text for a greeting that has no "Hi " in it."""
            possible = [p for p, can_match in zip(self.patterns, checks, strict=True) if can_match(text)]
            if not possible:
                return []
            every, self.patterns = self.patterns, possible  # an analyzer serves one text at a time
            try:
                return super().analyze(text, entities, nlp_artifacts, regex_flags)
            finally:
                self.patterns = every

    patterns = [Pattern(f"{spec.name}_{i}", regex, spec.score) for i, regex in enumerate(spec.patterns)]
    recognizer = PolicyPatternRecognizer(
        supported_entity=spec.entity, name=spec.name, patterns=patterns, context=spec.context or None
    )
    checks = [text_can_match(p.regex, recognizer.global_regex_flags, regex_engine) for p in patterns]
    return recognizer


def builtin_recognizer(name: str, ner_model: str) -> Any:
    """A new instance of our recognizer the policy calls ``name`` (``pipeline/recognizers/``);
    the person recognizers read the spaCy package ``ner_model``'s English word list."""
    from pipeline.recognizers import BUILTIN, WORD_LIST_USERS

    module, cls = BUILTIN[name]
    recognizer = getattr(importlib.import_module(f"pipeline.recognizers.{module}"), cls)
    return recognizer(ner_model) if name in WORD_LIST_USERS else recognizer()


def build_analyzer(policy: PiiPolicy) -> Any:
    """Presidio AnalyzerEngine: the pinned spaCy NER, predefined and the policy's recognizers."""
    from pipeline.common.offline import configure_offline

    configure_offline()
    import logging

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": policy.language, "model_name": policy.ner_model}],
        }
    )
    # context words count in the 5 words before a match (Presidio's default) and the 2 after it
    # ("723 813 266 office")
    enhancer = LemmaContextAwareEnhancer(context_prefix_count=5, context_suffix_count=CONTEXT_SUFFIX_WORDS)
    analyzer = AnalyzerEngine(
        nlp_engine=provider.create_engine(), supported_languages=[policy.language], context_aware_enhancer=enhancer
    )
    # Presidio's phone recognizer, for the policy's regions: each region is one more pass of the
    # phonenumbers matcher over every text
    analyzer.registry.remove_recognizer("PhoneRecognizer")
    analyzer.registry.add_recognizer(PhoneRecognizer(supported_regions=tuple(policy.phone_regions)))
    for spec in policy.recognizers:
        analyzer.registry.add_recognizer(build_recognizer(spec))
    for name in policy.builtin_recognizers:
        analyzer.registry.add_recognizer(builtin_recognizer(name, policy.ner_model))
    return analyzer


CONTEXT_SUFFIX_WORDS = 2
_WORDS = re.compile(r"[^\W\d_][\w'’-]+")


_POSSESSIVE = re.compile(r"['’]s?$")


def _bare(word: str) -> str:
    """A word case-folded, without a possessive ending: "Hasti's" and "Hasti" are one name."""
    return _POSSESSIVE.sub("", word.casefold())


def propagate_names(text: str, detections: list[Detection], allow_list: Sequence[str] = ()) -> list[Detection]:
    """Adds every other whole-word occurrence (any case, with or without a possessive ending) of
    a word of a detected name, so a name found once ("Csanád had given Csanád ...", "calls me
    Calan", "Hasti's Tales ... early Hasti") is removed everywhere;
    never a word of an allow-listed phrase (a product name the NER took for a person)."""
    allowed = {_bare(w) for phrase in allow_list for w in _WORDS.findall(phrase)}
    names = {
        _bare(w)
        for d in detections
        if d.entity == "PERSON"
        for w in _WORDS.findall(text[d.start : d.end])
        if len(_bare(w)) >= 3
    } - allowed
    if not names:
        return detections
    covered = [(d.start, d.end) for d in detections]
    extra = []
    for m in _WORDS.finditer(text):
        if _bare(m.group(0)) in names and not any(s <= m.start() and m.end() <= e for s, e in covered):
            extra.append(Detection(m.start(), m.end(), "PERSON", 0.5))
    return detections + extra if extra else detections


def outside_allowed(text: str, detections: list[Detection], allow_list: Sequence[str]) -> list[Detection]:
    """Drops detections that lie mostly (half their characters or more) inside an occurrence of an
    allow-listed phrase. Presidio's own ``allow_list`` drops only a detection that *is* the phrase,
    not "Vega Tablet" (a surname and a noun) or "Nimbus Router X2 19" (a street shape) inside it."""
    allowed = {
        i for phrase in allow_list for m in re.finditer(re.escape(phrase), text) for i in range(m.start(), m.end())
    }
    if not allowed:
        return detections
    return [d for d in detections if 2 * sum(i in allowed for i in range(d.start, d.end)) < d.end - d.start]


_ESCAPED_BREAK = re.compile(r"\\[nrt]")


def unescape_breaks(text: str) -> str:
    """``text`` as the analyzer reads it: a literal ``\\n``, ``\\r`` or ``\\t`` (two characters, as
    JSON-escaped exports and logs write a line break) becomes a space and the break itself, so the
    tokenizer, the NER and the line-anchored recognizers see two lines ("Name: Ana Lee\\nPhone:"
    was one token "Lee\\nPhone"). Same length, so detections keep their offsets in ``text``."""
    if "\\" not in text:
        return text
    return _ESCAPED_BREAK.sub(lambda m: " " + {"n": "\n", "r": "\r", "t": "\t"}[m.group(0)[1]], text)


def detect_batch(
    analyzer: Any, policy: PiiPolicy, texts: Sequence[str | None], batch_size: int
) -> list[list[Detection]]:
    """Runs the analyzer over texts with spaCy batching; keeps detections above each entity's minimum."""
    from presidio_analyzer import BatchAnalyzerEngine

    entities = list(policy.entities)
    floor = min(e.min_score for e in policy.entities.values())
    batch = BatchAnalyzerEngine(analyzer)
    read = unescape_breaks if policy.escaped_line_breaks else (lambda t: t)
    results = batch.analyze_iterator(
        [read(t or "") for t in texts], language=policy.language, batch_size=batch_size, entities=entities,
        allow_list=policy.allow_list or None, score_threshold=floor,
    )  # fmt: skip
    out = []
    for text, found in zip(texts, results, strict=True):
        kept = [
            Detection(r.start, r.end, r.entity_type, round(float(r.score), 4))
            for r in found
            if r.score >= policy.entities[r.entity_type].min_score
        ]
        if policy.allow_list and text:
            kept = outside_allowed(text, kept, policy.allow_list)
        if policy.propagate_names and text:
            kept = propagate_names(text, kept, policy.allow_list)
        out.append(sorted(kept, key=lambda d: (d.start, d.end, d.entity)))
    return out


def build_operators(policy: PiiPolicy, key: PseudonymKey) -> dict[str, Any]:
    """Presidio OperatorConfigs per entity, from the policy's operator names."""
    from presidio_anonymizer.entities import OperatorConfig

    def config(entity: str, operator: str) -> Any:
        if operator == "replace":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if operator == "redact":
            return OperatorConfig("redact", {})
        if operator == "mask":
            return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
        if operator == "hash":
            return OperatorConfig("custom", {"lambda": lambda value: keyed_digest(key, entity, value)})
        return OperatorConfig("custom", {"lambda": lambda value: pseudonym(key, entity, value)})

    return {entity: config(entity, spec.operator) for entity, spec in policy.entities.items()}


def anonymize(anonymizer: Any, text: str, detections: Iterable[Detection], operators: dict[str, Any]) -> str:
    """Replaces the detected spans in ``text`` with the policy's operators."""
    from presidio_anonymizer.entities import RecognizerResult

    results = [RecognizerResult(d.entity, d.start, d.end, d.score) for d in detections]
    if not results:
        return text
    return anonymizer.anonymize(text=text, analyzer_results=results, operators=operators).text


def tag_spans(text: str) -> list[tuple[int, int]]:
    """Where our replacement tags (``<PERSON_42c3721df9>``, ``****``, keyed hashes) are in scrubbed text."""
    return [(m.start(), m.end()) for m in _TAG.finditer(text)]


def outside_tags(text: str, detections: Iterable[Detection]) -> list[Detection]:
    """Detections in scrubbed text that are not (inside) one of our replacement tags."""
    tags = tag_spans(text)
    return [d for d in detections if not any(s <= d.start and d.end <= e for s, e in tags)]


def clear_of_tags(text: str, detections: Iterable[Detection]) -> list[Detection]:
    """Detections that touch none of our replacement tags: scrubbing scrubbed text again (a
    counterfactual variant) then changes only what is new in it, never a tag."""
    tags = tag_spans(text)
    return [d for d in detections if not any(d.start < e and s < d.end for s, e in tags)]
