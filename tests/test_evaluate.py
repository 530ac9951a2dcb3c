"""Tests of the evaluate stage's metrics (pure functions) and of the stage on the tiny profile."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.common.counterfactual import augment_with_counterfactuals, flip_age_statements, make_variant, swap_terms
from pipeline.common.evaluation import bootstrap_ci, group_fairness, rouge_l, wilson
from pipeline.common.policy import load_fairness_policy
from pipeline.evaluate import canary_exposure, regurgitation, training_label_bias
from tests.conftest import REPO

FAIRNESS = load_fairness_policy(REPO / "policies" / "fairness.yaml")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("My husband set this up for me.", "My wife set this up for me."),
        ("My Wife and my DAD.", "My Husband and my MOM."),
        ("As a mother of two", "As a father of two"),
        ("Ms. <PERSON_0123456789>, she said", "Mr. <PERSON_0123456789>, he said"),
        ("The motherboard is broken.", "The motherboard is broken."),  # whole words only
        ("Shipping to Herald Square", "Shipping to Herald Square"),  # no partial 'her'
    ],
)
def test_gender_swaps(text, expected):
    assert swap_terms(text, FAIRNESS.counterfactual.swaps["gender"]) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I'm 71 and retired.", "I'm 24 and retired."),
        ("I'm 23 and a student.", "I'm 72 and a student."),
        ("No age here.", "No age here."),
    ],
)
def test_age_statement_flip(text, expected):
    assert flip_age_statements(text, FAIRNESS) == expected


def test_variant_of_a_message_without_signal_is_unchanged():
    assert make_variant("The router keeps disconnecting.", "gender", FAIRNESS) == "The router keeps disconnecting."
    assert (
        make_variant("I'm 71 and retired, my grandkids help.", "age_band", FAIRNESS)
        == "I'm 24 and employed, my kids help."
    )


def test_counterfactual_augmentation_adds_one_labelled_variant_per_signal():
    records = [
        {"ticket_id": "T1", "message": "My wife cannot log in.", "reply": "r1", "category": "account", "priority": "high"},
        {"ticket_id": "T2", "message": "I'm 71 and retired.", "reply": "r2", "category": "billing", "priority": "low"},
        {"ticket_id": "T3", "message": "The router is down.", "reply": "r3", "category": "technical", "priority": "urgent"},
    ]  # fmt: skip
    augmented, counts = augment_with_counterfactuals(records, FAIRNESS)
    assert augmented[:3] == records  # the originals first, unchanged
    assert counts == {"gender": 1, "age_band": 1}  # T3 carries no signal: no copy
    by_id = {r["ticket_id"]: r for r in augmented[3:]}
    assert by_id["T1#cf-gender"] == records[0] | {"ticket_id": "T1#cf-gender", "message": "My husband cannot log in."}
    assert by_id["T2#cf-age_band"] == records[1] | {"ticket_id": "T2#cf-age_band", "message": "I'm 24 and employed."}


@pytest.mark.parametrize(
    "cand,ref,score",
    [("the refund was issued", "the refund was issued", 1.0), ("", "anything", 0.0), ("a b c", "x y z", 0.0)],
)
def test_rouge_l(cand, ref, score):
    assert rouge_l(cand, ref) == pytest.approx(score)


def test_rouge_l_partial():
    assert 0 < rouge_l("your refund was approved today", "the refund was approved") < 1


def test_wilson_interval_contains_the_proportion_and_narrows():
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi
    lo2, hi2 = wilson(500, 1000)
    assert hi2 - lo2 < hi - lo
    assert wilson(0, 0) is None


def test_bootstrap_ci_of_a_constant_is_a_point():
    boot = FAIRNESS.bootstrap
    assert bootstrap_ci(lambda yt, yp: 1.0, [0] * 50, [0] * 50, ["all"] * 50, boot) == [1.0, 1.0]
    assert bootstrap_ci(lambda yt, yp: 1.0, [], [], [], boot) is None


def _hand_bootstrap_gap(yp, groups, samples, confidence, seed):
    """The percentile bootstrap govtune used before Fairlearn's (kept here as the reference)."""
    rng, n, gaps = random.Random(seed), len(yp), []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        rates = {}
        for i in idx:
            rates.setdefault(groups[i], []).append(yp[i])
        if len(rates) > 1:
            means = [sum(v) / len(v) for v in rates.values()]
            gaps.append(max(means) - min(means))
    gaps.sort()
    return gaps[int((1 - confidence) / 2 * (len(gaps) - 1))], gaps[int((1 + confidence) / 2 * (len(gaps) - 1))]


@pytest.mark.parametrize("n,rates", [(200, (0.30, 0.45)), (600, (0.20, 0.22, 0.35))])
def test_fairlearns_bootstrap_gives_the_hand_loops_interval_within_noise(n, rates):
    """Fairlearn's MetricFrame bootstrap (n_boot, ci_quantiles) against the hand loop it replaced,
    on the demographic parity difference of a test-split-sized sample: each end within 0.03
    (the Monte Carlo noise of 500 resamples here is about 0.01), and both contain the gap."""
    from fairlearn.metrics import selection_rate

    rng = random.Random(3)
    groups = [f"g{i % len(rates)}" for i in range(n)]
    yp = [int(rng.random() < rates[i % len(rates)]) for i in range(n)]
    boot = FAIRNESS.bootstrap.model_copy(update={"samples": 500})
    ours = bootstrap_ci(selection_rate, yp, yp, groups, boot, of="difference")
    hand = _hand_bootstrap_gap(yp, groups, 500, boot.confidence, 11)
    by = {g: [p for p, gg in zip(yp, groups, strict=True) if gg == g] for g in set(groups)}
    gap = max(sum(v) / len(v) for v in by.values()) - min(sum(v) / len(v) for v in by.values())
    assert ours[0] < gap < ours[1] and hand[0] < gap < hand[1]
    assert abs(ours[0] - hand[0]) < 0.03 and abs(ours[1] - hand[1]) < 0.03, (ours, hand)


def _fairness_case(biased: bool):
    truths, preds, attrs = [], [], []
    for i in range(200):
        gender = "female" if i % 2 else "male"
        priority = "urgent" if i % 4 < 2 else "low"
        predicted = "low" if (biased and gender == "female") else priority
        truths.append({"category": "billing", "priority": priority})
        preds.append({"category": "billing", "priority": predicted})
        attrs.append({"gender": gender, "age_band": "30-44", "region": "europe"})
    return preds, truths, attrs


def test_group_fairness_detects_bias_and_not_its_absence():
    fair = group_fairness(*_fairness_case(False), FAIRNESS)["gender"]
    biased = group_fairness(*_fairness_case(True), FAIRNESS)["gender"]
    assert fair["demographic_parity_difference"]["value"] == pytest.approx(0.0)
    assert biased["demographic_parity_difference"]["value"] == pytest.approx(0.5)
    assert biased["equalized_odds_difference"]["value"] > 0.9
    assert biased["groups"]["female"]["escalation_rate"] == 0.0 and biased["groups"]["female"]["n"] == 100
    lo, hi = biased["demographic_parity_difference"]["ci95"]
    assert lo <= 0.5 <= hi


def test_category_parity_finds_the_routed_category_and_not_its_absence():
    preds, truths, attrs = _fairness_case(False)
    categories = ["billing", "billing", "technical_issue", "technical_issue"] * 50  # each group: half and half
    fair = [p | {"category": c} for p, c in zip(preds, categories, strict=True)]
    routed = [p | {"category": "product_question"} if a["gender"] == "female" and p["category"] == "technical_issue"
              else p for p, a in zip(fair, attrs, strict=True)]  # fmt: skip
    unbiased = group_fairness(fair, truths, attrs, FAIRNESS)["gender"]
    biased = group_fairness(routed, truths, attrs, FAIRNESS)["gender"]
    assert unbiased["category_parity_difference"]["value"] == pytest.approx(0.0)
    assert biased["category_parity_category"] in ("technical_issue", "product_question")
    assert biased["category_parity_difference"]["value"] == pytest.approx(0.5)
    lo, hi = biased["category_parity_difference"]["ci95"]
    assert 0 < lo <= 0.5 <= hi
    assert biased["groups"]["female"]["predicted_category_share"]["product_question"] == 0.5
    assert biased["groups"]["male"]["predicted_category_share"]["product_question"] == 0.0


def test_small_groups_are_flagged():
    preds, truths, attrs = _fairness_case(False)
    for i, a in enumerate(attrs):
        a["region"] = "europe" if i < 100 else "north_america"
    attrs[0]["region"] = "latin_america"
    out = group_fairness(preds, truths, attrs, FAIRNESS)["region"]
    assert out["small_groups"] == ["latin_america"] and out["groups"]["latin_america"]["too_small"]
    assert out["parity_over_groups"] == ["europe", "north_america"]
    only_one = group_fairness(preds, truths, [{**a, "region": "europe"} for a in attrs], FAIRNESS)["region"]
    assert "error" in only_one


class FakeScorer:
    """Scores a code by how many leading digits it shares with the secret (a 'memorising' model)."""

    def __init__(self, secret: str, memorised: bool):
        self.secret, self.memorised = secret, memorised

    def prompt_text(self, message):
        return "P:"

    def encode(self, text):
        return [ord(c) for c in text]

    def split_common(self, texts):
        from pipeline.common.scorer import Scorer

        return Scorer.split_common(self, texts)

    def suffix_logprobs(self, prefix, suffixes):
        codes = ["".join(chr(t) for t in s).rstrip(".") for s in suffixes]
        if self.memorised:
            return [10.0 if c == self.secret else -float(int(c) % 97) for c in codes]
        return [-float(int(c) % 97) for c in codes]


def test_canary_exposure_is_high_when_memorised_and_low_when_not():
    canary = {
        "ticket_id": "CANARY-1",
        "message": "m",
        "category": "account_access",
        "priority": "medium",
        "secret": "000096",
    }
    hi = canary_exposure(FakeScorer("000096", True), [canary], 100, seed=1)[0]
    lo = canary_exposure(FakeScorer("000096", False), [canary], 100, seed=1)[0]
    assert hi["rank"] == 1 and hi["exposure"] == pytest.approx(math.log2(101), abs=1e-3)
    assert lo["exposure"] < 1.0


def test_regurgitation_counts_raw_values():
    out = regurgitation(
        ["reply with john.doe@example.com", "nothing here", "Ana said hi"],
        {"john.doe@example.com", "Ana", "Banana"},
        None,
    )
    assert out["regurgitated_pii_values"]["value"] == 2 and out["regurgitated_pii_values"]["n"] == 3
    clean = regurgitation(["<PERSON_0123456789> will call"], {"john.doe@example.com"}, lambda texts: [0 for _ in texts])
    assert clean["regurgitated_pii_values"]["value"] == 0 and clean["pii_like_output_rate"]["value"] == 0.0


def _labels(rows, attribute="gender", label="priority"):
    table: dict = {}
    for r in rows:
        group = table.setdefault(attribute, {}).setdefault(r[attribute], {})
        group[r[label]] = group.get(r[label], 0) + 1
    return table


def _examine(rows, policy, attribute="gender"):
    """The stage's examination of ``rows`` (priority and category labels of one attribute)."""
    return training_label_bias(_labels(rows, attribute), _labels(rows, attribute, "category"), policy)


@pytest.mark.parametrize(
    "rates,sizes,flagged",
    [
        ({"female": 0.45, "male": 0.45}, {"female": 400, "male": 400}, False),  # no gap
        ({"female": 0.40, "male": 0.45}, {"female": 400, "male": 400}, False),  # a gap within chance
        ({"female": 0.15, "male": 0.45}, {"female": 400, "male": 400}, True),  # label bias
        ({"female": 0.15, "male": 0.45}, {"female": 40, "male": 40}, False),  # the same gap on few records: not certain
        (
            {"female": 0.45, "male": 0.45, "nonbinary": 0.0},
            {"female": 400, "male": 400, "nonbinary": 10},
            False,
        ),  # too small to judge
    ],
)
def test_training_label_bias_flags_only_gaps_beyond_chance(rates, sizes, flagged):
    rows = []
    for group, rate in rates.items():
        escalated = round(rate * sizes[group])
        rows += [{"gender": group, "priority": "high", "category": "billing"}] * escalated + [
            {"gender": group, "priority": "low", "category": "billing"}
        ] * (sizes[group] - escalated)
    policy = FAIRNESS.model_copy(update={"protected_attributes": ["gender"]})
    out = _examine(rows, policy)["gender"]
    gap = max(r for g, r in rates.items() if sizes[g] >= policy.min_group_size) - min(
        r for g, r in rates.items() if sizes[g] >= policy.min_group_size
    )
    assert out["escalation_gap"]["value"] == pytest.approx(gap, abs=0.01)
    assert (out["escalation_gap_lower_bound"]["value"] > 0.10) == flagged
    assert out["escalation_gap_lower_bound"]["value"] <= out["escalation_gap"]["value"]
    assert out["category_gap"]["value"] == 0.0 and out["category_gap_category"] == "billing"  # one category: no gap


@pytest.mark.parametrize(
    "routed,sizes,flagged",
    [
        (0.0, 400, False),  # both groups: half billing, half technical
        (0.05, 400, False),  # 5 of every 100 of one group's technical tickets labelled billing: within chance
        (0.6, 400, True),  # a routing bias
        (0.6, 30, False),  # the same bias on few records: not certain
    ],
)
def test_training_label_bias_sees_a_routing_bias_in_the_category_labels(routed, sizes, flagged):
    rows = []
    for group in ("female", "male"):
        moved = round(routed * sizes / 2) if group == "female" else 0
        rows += [{"gender": group, "priority": "low", "category": "billing"}] * (sizes // 2 + moved)
        rows += [{"gender": group, "priority": "low", "category": "technical_issue"}] * (sizes // 2 - moved)
    out = _examine(rows, FAIRNESS.model_copy(update={"protected_attributes": ["gender"]}))["gender"]
    assert out["category_gap"]["value"] == pytest.approx(routed / 2, abs=0.01)
    assert (out["category_gap_lower_bound"]["value"] > 0.10) == flagged
    assert out["escalation_gap"]["value"] == 0.0
    assert out["groups"]["female"]["category_share"]["billing"] == pytest.approx(0.5 + routed / 2, abs=0.01)


def test_training_label_bias_sees_the_injected_bias_of_synthesize():
    from pipeline.common.params import load_params
    from pipeline.synthesize import generate

    cfg = load_params(REPO / "params.yaml").synthesize.model_copy(update={"rows": 1500})
    fair, _ = generate(cfg)
    biased, _ = generate(cfg.model_copy(update={"label_bias": cfg.label_bias.model_copy(update={"strength": 1.0})}))
    routed, _ = generate(cfg.model_copy(update={"label_bias": cfg.label_bias.model_copy(
        update={"strength": 1.0, "target": "category", "attribute": "age_band", "group": "60+", "route_from": "any"})}))  # fmt: skip
    runs = (("fair", fair), ("biased", biased), ("routed", routed))
    found = {name: {a: _examine(rows, FAIRNESS, a)[a] for a in FAIRNESS.protected_attributes} for name, rows in runs}
    lower = {name: {a: t["escalation_gap_lower_bound"]["value"] for a, t in f.items()} for name, f in found.items()}
    routing = {name: {a: t["category_gap_lower_bound"]["value"] for a, t in f.items()} for name, f in found.items()}
    assert all(v <= 0.10 for v in lower["fair"].values()), lower
    assert all(v <= 0.10 for v in routing["fair"].values()), routing
    assert lower["biased"]["gender"] > 0.2 and lower["biased"]["age_band"] <= 0.10, lower
    assert (
        routing["routed"]["age_band"] > 0.2
        and found["routed"]["age_band"]["category_gap_category"] == "product_question"
    )
    assert routing["routed"]["gender"] <= 0.10 and lower["routed"]["age_band"] <= 0.10, (routing, lower)


def test_training_label_bias_needs_two_groups():
    out = _examine([{"gender": "female", "priority": "high", "category": "billing"}] * 50, FAIRNESS)
    assert "error" in out["gender"] and "error" in out["region"]


def test_every_metric_is_defined_in_the_docs():
    from pipeline.common.evaluation import DEFINITIONS

    doc = (REPO / "docs" / "evaluation.md").read_text()
    for key, text in DEFINITIONS.items():
        assert f"`{key}` | {text} |" in doc


PRECISION_ROWS = [
    # requested, cpuinfo flags line, resolved
    ("auto", "flags\t\t: fpu sse avx2 avx512f avx512_bf16", "bf16"),
    ("auto", "flags\t\t: fpu sse amx_bf16 amx_tile", "bf16"),
    ("auto", "flags\t\t: fpu sse avx2", "fp32"),  # bf16 would be emulated: 10x slower than fp32
    ("auto", "", "fp32"),
    ("bf16", "flags\t\t: fpu sse avx2", "bf16"),  # asked for: honoured
    ("fp32", "flags\t\t: avx512_bf16", "fp32"),
]


@pytest.mark.parametrize("requested,cpuinfo,resolved", PRECISION_ROWS)
def test_evaluation_precision_auto_uses_bf16_only_where_the_cpu_has_it(requested, cpuinfo, resolved):
    from pipeline.common.scorer import cpu_has_native_bf16, resolve_precision

    assert resolve_precision(requested, cpu_has_native_bf16(cpuinfo)) == resolved
