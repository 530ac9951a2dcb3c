"""Tests of the split stage: deterministic, grouped by customer, stratified, attributes kept apart."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipeline.common.params import load_params
from pipeline.common.task import ATTRIBUTE_COLUMNS
from pipeline.split import SPLITS, assign_customers, split_records
from pipeline.synthesize import generate
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
CFG = PARAMS.split


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return generate(PARAMS.synthesize.model_copy(update={"rows": 1500}))[0]


def test_row_order_does_not_matter(records):
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    a, b = split_records(records, CFG), split_records(shuffled, CFG)
    assert a.splits == b.splits and a.test_attributes == b.test_attributes


def test_no_customer_in_two_splits(records):
    result = split_records(records, CFG)
    owners = {}
    for name, rows in result.splits.items():
        for r in rows:
            assert owners.setdefault(r["customer_id"], name) == name
    assert result.report["customer_overlap"] == 0
    canaries = CFG.canaries.count * CFG.canaries.repeats
    assert sum(len(rows) for rows in result.splits.values()) == len(records) + canaries


def test_fractions_and_stratification(records):
    result = split_records(records, CFG)
    shares = result.report["record_share"]
    assert abs(shares["train"] - CFG.train) < 0.06 and abs(shares["val"] - CFG.val) < 0.04
    overall = Counter(r["category"] for r in records)
    for name in SPLITS:
        counts = Counter(r["category"] for r in result.splits[name])
        n = sum(counts.values())
        for category, total in overall.items():
            assert abs(counts[category] / n - total / len(records)) < 0.07, (name, category)


def test_protected_attributes_only_in_the_evaluation_file(records):
    result = split_records(records, CFG)
    for rows in result.splits.values():
        assert not any(set(ATTRIBUTE_COLUMNS) & set(r) for r in rows)
    assert {a["ticket_id"] for a in result.test_attributes} == {r["ticket_id"] for r in result.splits["test"]}
    assert all(set(ATTRIBUTE_COLUMNS) <= set(a) for a in result.test_attributes)


def test_labels_per_group_are_counted_per_split(records):
    result = split_records(records, CFG)
    table = result.report["priority_by_attribute"]
    for name in SPLITS:
        real = [r for r in result.splits[name] if not r["ticket_id"].startswith("CANARY")]
        for attribute in ATTRIBUTE_COLUMNS:
            assert sum(n for by_priority in table[name][attribute].values() for n in by_priority.values()) == len(real)
    by_id = {r["ticket_id"]: r for r in records}
    females = Counter(
        by_id[r["ticket_id"]]["priority"]
        for r in result.splits["train"]
        if by_id.get(r["ticket_id"], {}).get("gender") == "female"
    )
    assert table["train"]["gender"]["female"] == dict(females)
    routes = result.report["category_by_attribute"]
    assert routes["train"]["gender"]["female"] == dict(
        Counter(by_id[r["ticket_id"]]["category"] for r in result.splits["train"]
                if by_id.get(r["ticket_id"], {}).get("gender") == "female")
    )  # fmt: skip


def test_salt_draws_another_split(records):
    a = assign_customers(records, CFG)
    b = assign_customers(records, CFG.model_copy(update={"salt": "other"}))
    assert a.keys() == b.keys() and a != b


@pytest.mark.parametrize("train,val", [(0.9, 0.1), (0.95, 0.2)])
def test_fractions_must_leave_a_test_split(train, val):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="train \\+ val must be below 1"):
        CFG.model_validate({**CFG.model_dump(), "train": train, "val": val})


def test_canaries_only_in_train_replies(records):
    result = split_records(records, CFG)
    assert (
        len(result.canaries) == CFG.canaries.count and len({c["secret"] for c in result.canaries}) == CFG.canaries.count
    )
    for c in result.canaries:
        in_train = [r for r in result.splits["train"] if r["ticket_id"] == c["ticket_id"]]
        assert len(in_train) == CFG.canaries.repeats and c["secret"] in in_train[0]["reply"]
        assert c["secret"] not in in_train[0]["message"]
        assert not any(c["ticket_id"] == r["ticket_id"] for name in ("val", "test") for r in result.splits[name])
