"""Counterfactual variants of a ticket: the same text with its demographic signals swapped.

The swaps come from ``policies/fairness.yaml`` (``counterfactual``). The evaluate stage and
``govtune monitor`` score a variant of each test message to measure how often the answer
flips; the finetune stage (``finetune.counterfactual_augmentation``) adds a variant of each
training ticket with the original's labels (counterfactual data augmentation, Lu et al.
2018), so the model learns that these words do not change the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pipeline.common.policy import FairnessPolicy


def _swap_case(word: str, like: str) -> str:
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_terms(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Swaps each pair both ways (whole words, case kept), in one pass."""
    mapping = {}
    for a, b in pairs:
        mapping[a.lower()], mapping[b.lower()] = b, a
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b", re.I)
    return pattern.sub(lambda m: _swap_case(mapping[m.group(0).lower()], m.group(0)), text)


def flip_age_statements(text: str, policy: FairnessPolicy) -> str:
    """Turns "I'm NN" into the other side of the threshold (young <-> old)."""
    ages = policy.counterfactual.age_statements
    if ages is None:
        return text

    def repl(m: re.Match) -> str:
        age = int(m.group(1))
        return f"I'm {ages.young_age if age >= ages.threshold else ages.old_age}"

    return re.sub(r"\bI'm (\d{2})\b", repl, text)


def make_variant(text: str, attribute: str, policy: FairnessPolicy) -> str:
    """The counterfactual of ``text`` for ``attribute`` (may equal ``text``: no signal)."""
    variant = swap_terms(text, policy.counterfactual.swaps.get(attribute, []))
    if attribute == "age_band":
        variant = flip_age_statements(variant, policy)
    return variant


def augment_with_counterfactuals(
    records: list[dict[str, Any]], policy: FairnessPolicy
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``records`` followed by one variant per record and attribute whose message carries a signal.

    A variant keeps the original's labels and reply; its ``ticket_id`` gets ``#cf-<attribute>``.
    The variant's message is the original's scrubbed text with listed words swapped, so it holds
    no value the scrub did not already treat. Returns the records and the count per attribute.
    """
    added: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for attribute in policy.counterfactual.swaps:
        variants = [
            r | {"message": v, "ticket_id": f"{r.get('ticket_id', '')}#cf-{attribute}"}
            for r in records
            if (v := make_variant(r["message"], attribute, policy)) != r["message"]
        ]
        counts[attribute] = len(variants)
        added.extend(variants)
    return records + added, counts
