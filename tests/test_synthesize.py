"""Tests of the demo-data generator: determinism, span truth, knobs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.common.params import load_params
from pipeline.synthesize import (
    CATEGORIES,
    COLUMNS,
    OVERLONG_CHARS,
    PRIORITIES,
    generate,
    join_rendered,
    main,
    render,
)  # fmt: skip
from tests.conftest import REPO

DEFAULT = load_params(REPO / "params.yaml").synthesize


def cfg(**update):
    return DEFAULT.model_copy(update={"rows": 300, **update})


def test_same_seed_gives_identical_files(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    main(["--rows", "200", "--out-dir", str(tmp_path / "a")])
    main(["--rows", "200", "--out-dir", str(tmp_path / "b")])
    for name in ("tickets.jsonl", "pii_spans.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_seed_gives_other_data():
    assert generate(cfg(seed=1))[0] != generate(cfg(seed=2))[0]


def test_committed_default_matches_generator(tmp_path, monkeypatch):
    """The committed data/raw is exactly what params.yaml's synthesize section produces."""
    monkeypatch.chdir(REPO)
    main(["--out-dir", str(tmp_path)])
    params = load_params(REPO / "params.yaml")
    assert (tmp_path / "tickets.jsonl").read_bytes() == (REPO / params.data.raw).read_bytes()
    assert (tmp_path / "pii_spans.jsonl").read_bytes() == (REPO / params.data.raw_pii_spans).read_bytes()


def test_schema_labels_and_ids():
    tickets, _ = generate(cfg())
    assert len(tickets) == 300
    assert all(tuple(t) == COLUMNS for t in tickets)
    assert len({t["ticket_id"] for t in tickets}) == 300
    assert set(Counter(t["category"] for t in tickets)) == set(CATEGORIES)
    assert set(Counter(t["priority"] for t in tickets)) == set(PRIORITIES)
    assert [t["created_at"] for t in tickets] == sorted(t["created_at"] for t in tickets)
    # Customers write several tickets (needed for a customer-grouped split).
    assert len({t["customer_id"] for t in tickets}) < 300


def test_every_span_points_at_its_value_and_all_entity_types_occur():
    tickets, spans = generate(cfg(rows=600))
    by_id = {t["ticket_id"]: t for t in tickets}
    for s in spans:
        assert by_id[s["ticket_id"]][s["field"]][s["start"] : s["end"]] == s["value"]
    expected = {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS", "CREDIT_CARD", "IBAN_CODE",
                "US_SSN", "IP_ADDRESS", "DATE_OF_BIRTH", "ACCOUNT_ID", "EMPLOYEE_ID"}  # fmt: skip
    assert {s["entity_type"] for s in spans} == expected


def test_text_carries_demographic_signals_but_not_the_attribute_columns():
    tickets, _ = generate(cfg(rows=400))
    signals = ("husband", "wife", "mother", "father", "mom", "dad", "I'm ")
    assert sum(any(w in t["message"] for w in signals) for t in tickets) > 200
    assert not any(t["gender"] in t["message"].split() for t in tickets if t["gender"] != "nonbinary")


@pytest.mark.parametrize(
    "template,values,text,spans",
    [
        ("Hi {first}!", {"first": "Ana"}, "Hi Ana!", [(3, 6, "PERSON")]),
        (
            "{email} or {phone}",
            {"email": "a@b.co", "phone": "1"},
            "a@b.co or 1",
            [(0, 6, "EMAIL_ADDRESS"), (10, 11, "PHONE_NUMBER")],
        ),
        ("order {order}", {"order": "ORD-1"}, "order ORD-1", []),  # not PII: no span
        ("no slots", {}, "no slots", []),
    ],
)
def test_render_table(template, values, text, spans):
    out, got = render(template, values, "message")
    assert out == text
    assert [(s.start, s.end, s.entity_type) for s in got] == spans


def test_join_shifts_spans():
    text, spans = join_rendered(
        [render("Hi {first}.", {"first": "Bo"}, "m"), render("I am {last}", {"last": "Li"}, "m")]
    )
    assert text == "Hi Bo. I am Li"
    assert [text[s.start : s.end] for s in spans] == ["Bo", "Li"]


def test_label_bias_lowers_priority_of_the_group_only():
    strength = DEFAULT.label_bias.model_copy(update={"strength": 1.0})
    fair, _ = generate(cfg(rows=600))
    biased, _ = generate(cfg(rows=600, label_bias=strength))
    rank = PRIORITIES.index
    lowered = [rank(b["priority"]) < rank(f["priority"]) for f, b in zip(fair, biased, strict=True)]
    group = [f["gender"] == "female" for f in fair]
    assert any(lowered)
    assert all(g for g, low in zip(group, lowered, strict=True) if low), "bias touched another group"
    assert all(b["priority"] == f["priority"] for f, b in zip(fair, biased, strict=True) if f["gender"] != "female")


def test_routing_bias_relabels_only_the_groups_route_from_tickets():
    """label_bias.target: category: the 60+ customers' technical tickets labelled product_question,
    text, priority and every other ticket as in the unbiased data (one RNG draw per ticket either way)."""
    route = DEFAULT.label_bias.model_copy(
        update={"strength": 1.0, "target": "category", "attribute": "age_band", "group": "60+"}
    )
    fair, _ = generate(cfg(rows=600))
    biased, _ = generate(cfg(rows=600, label_bias=route))
    moved = [(f, b) for f, b in zip(fair, biased, strict=True) if f["category"] != b["category"]]
    assert moved and all(
        f["age_band"] == "60+" and (f["category"], b["category"]) == ("technical_issue", "product_question")
        for f, b in moved
    )
    assert len(moved) == sum(f["age_band"] == "60+" and f["category"] == "technical_issue" for f in fair)
    assert all(f | {"category": b["category"]} == b for f, b in zip(fair, biased, strict=True))


def test_routing_bias_from_any_category_routes_every_ticket_of_the_group():
    route = DEFAULT.label_bias.model_copy(
        update={"strength": 1.0, "target": "category", "attribute": "gender", "group": "female", "route_from": "any"}
    )
    biased, _ = generate(cfg(rows=300, label_bias=route))
    assert {t["category"] for t in biased if t["gender"] == "female"} == {"product_question"}
    assert len({t["category"] for t in biased if t["gender"] != "female"}) > 1


def test_visible_only_biases_only_the_tickets_whose_text_shows_the_group():
    """label_bias.visible_only: a 60+ ticket is routed only when its message states the age
    (the group's own signals); every other ticket keeps its unbiased label."""
    from pipeline.synthesize import AGE_SIGNALS

    route = DEFAULT.label_bias.model_copy(update={"strength": 1.0, "target": "category", "attribute": "age_band",
                                                  "group": "60+", "route_from": "any", "visible_only": True})  # fmt: skip
    fair, _ = generate(cfg(rows=600))
    biased, _ = generate(cfg(rows=600, label_bias=route))
    cues = [s.split("{age}")[1][:12] for s in AGE_SIGNALS["60+"]]  # "and retired," / ", my grandkid"
    shows = [f["age_band"] == "60+" and any(cue in f["message"] for cue in cues) for f in fair]
    assert 0 < sum(shows) < sum(f["age_band"] == "60+" for f in fair)
    for f, b, shown in zip(fair, biased, shows, strict=True):
        assert b["category"] == ("product_question" if shown else f["category"]), (f["ticket_id"], shown)
        assert f | {"category": b["category"]} == b


def test_a_route_must_join_two_categories():
    from pydantic import ValidationError

    from pipeline.common.errors import GovtuneError

    bias = DEFAULT.label_bias.model_dump() | {"target": "category"}
    with pytest.raises(ValidationError, match="same category"):
        type(DEFAULT.label_bias).model_validate(bias | {"route_to": bias["route_from"]})
    typo = type(DEFAULT.label_bias).model_validate(bias | {"route_from": "complaints"})
    with pytest.raises(GovtuneError, match="synthesize.label_bias.route_from"):
        generate(cfg(rows=10, label_bias=typo))


@pytest.mark.parametrize(
    "defect,check",
    [
        ("null_rate", lambda ts: any(t["message"] is None for t in ts)),
        ("duplicate_rate", lambda ts: len({t["ticket_id"] for t in ts}) < len(ts)),
        ("overlong_rate", lambda ts: any(t["message"] and len(t["message"]) > OVERLONG_CHARS for t in ts)),
    ],
)
def test_defect_knobs_inject_defects(defect, check):
    clean, _ = generate(cfg())
    assert not check(clean)
    defects = DEFAULT.defects.model_copy(update={defect: 0.1})
    dirty, spans = generate(cfg(defects=defects))
    assert check(dirty)
    nulled = {t["ticket_id"] for t in dirty if t["message"] is None}
    assert not any(s["ticket_id"] in nulled and s["field"] == "message" for s in spans)


def test_written_files_are_jsonl_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    main(["--rows", "20", "--seed", "7", "--out-dir", str(tmp_path)])
    lines = (tmp_path / "tickets.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 21
    assert all(json.loads(line.decode("utf-8"))["ticket_id"].startswith("TCK-") for line in lines[:-1])


def test_ibans_and_cards_are_valid_numbers():
    """Real identifiers carry check digits; a scrubber that validates them must see valid ones."""
    tickets, spans = generate(cfg(rows=800))

    def luhn(number: str) -> bool:
        digits = [int(c) for c in number if c.isdigit()][::-1]
        return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0

    def iban_ok(iban: str) -> bool:
        s = iban.replace(" ", "")
        return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1

    ibans = [s["value"] for s in spans if s["entity_type"] == "IBAN_CODE"]
    cards = [s["value"] for s in spans if s["entity_type"] == "CREDIT_CARD"]
    assert ibans and all(iban_ok(i) for i in ibans)
    assert cards and all(luhn(c) for c in cards)
    assert not iban_ok(ibans[0][:-1] + str((int(ibans[0][-1]) + 1) % 10)), "the check itself must be able to fail"
