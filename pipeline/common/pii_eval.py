"""How well a detector finds labelled PII: per-entity recall, direct-identifier recall, the share
of other text left alone, and labelled values left verbatim. Counts only, never a value.

Used by the ``pii_benchmark`` stage (the gate's evidence) and ``benchmarks/pii_generalisation``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Identify a person on their own (issue #19's "direct identifiers"); the rest are quasi-identifiers.
DIRECT = ("PERSON", "STREET_ADDRESS", "PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS",
          "US_DRIVER_LICENSE", "US_PASSPORT")  # fmt: skip
CAUGHT_SHARE = 0.8  # a span is caught when this share of its non-space characters is detected (as any entity)
DEFINITIONS = {
    "recall": f"share of labelled spans with at least {CAUGHT_SHARE:.0%} of their non-space characters inside a detection of any entity type",
    "strict_recall": "share of labelled spans with every alphanumeric character inside a detection (the scrub report's definition)",
    "direct_identifier_recall": f"recall over the spans of {', '.join(DIRECT)} together",
    "non_pii_chars_kept": "share of non-space characters outside every labelled span that no detection touches (over-redaction lowers it)",
    "verbatim_leaks": "labelled values still found, as whole words, in the text after the policy's operators replaced the detections",
}


def judge(rows: list[dict[str, Any]], detections: list[Iterable[tuple[int, int]]]) -> dict[str, Any]:
    """Recall per entity (and strict), direct-identifier recall and the kept share, for ``rows``
    (``{"text", "spans": [{"start", "end", "entity_type"}]}``) and their detected ``(start, end)``."""
    spans, caught, strict = Counter(), Counter(), Counter()
    other_chars = other_kept = 0
    for row, found in zip(rows, detections, strict=True):
        text = row["text"]
        covered = {i for s, e in found for i in range(s, e)}
        labelled: set[int] = set()
        for span in row["spans"]:
            chars = [i for i in range(span["start"], span["end"]) if not text[i].isspace()]
            labelled.update(range(span["start"], span["end"]))
            entity = span["entity_type"]
            spans[entity] += 1
            caught[entity] += sum(i in covered for i in chars) >= CAUGHT_SHARE * len(chars)
            strict[entity] += all(i in covered for i in chars if text[i].isalnum())
        rest = [i for i in range(len(text)) if i not in labelled and not text[i].isspace()]
        other_chars += len(rest)
        other_kept += sum(i not in covered for i in rest)
    direct_n = sum(spans[e] for e in DIRECT)
    return {
        "entities": {e: {"spans": n, "recall": round(caught[e] / n, 4), "strict_recall": round(strict[e] / n, 4), "direct": e in DIRECT}
                     for e, n in sorted(spans.items())},
        "direct_identifier_recall": round(sum(caught[e] for e in DIRECT) / direct_n, 4) if direct_n else None,
        "non_pii_chars_kept": round(other_kept / other_chars, 4) if other_chars else None,
        "sentences": len(rows),
        "spans": sum(spans.values()),
    }  # fmt: skip


def verbatim(value: str, text: str) -> bool:
    """``value`` occurs in ``text`` as a whole word (or words)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def verbatim_leaks(policy: Any, rows: list[dict[str, Any]], found: list[list[Any]]) -> dict[str, int]:
    """Labelled values still present, verbatim, once the policy's operators (with the public demo
    key: only whether a value survives matters) replaced ``found``, the detections on ``rows``."""
    from presidio_anonymizer import AnonymizerEngine

    from pipeline.common.keys import DEMO_KEY, PseudonymKey
    from pipeline.common.pii import anonymize, build_operators

    anonymizer = AnonymizerEngine()
    operators = build_operators(policy, PseudonymKey(DEMO_KEY, "demo"))
    leaks: Counter = Counter()
    for row, detections in zip(rows, found, strict=True):
        out = anonymize(anonymizer, row["text"], detections, operators)
        for span in row["spans"]:
            leaks[span["entity_type"]] += verbatim(span["value"], out)
    return dict(sorted(leaks.items()))
