"""Tests of the evaluate stage's metrics (pure functions) and of the stage on the tiny profile."""

from __future__ import annotations

import math

import pytest

from pipeline.common.policy import load_fairness_policy
from pipeline.evaluate import (
    bootstrap_ci, canary_exposure, flip_age_statements, group_fairness, make_variant, regurgitation, rouge_l,
    swap_terms, wilson,
)  # fmt: skip
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
    [("I'm 71 and retired.", "I'm 24 and retired."), ("I'm 23 and a student.", "I'm 72 and a student."), ("No age here.", "No age here.")],
)
def test_age_statement_flip(text, expected):
    assert flip_age_statements(text, FAIRNESS) == expected


def test_variant_of_a_message_without_signal_is_unchanged():
    assert make_variant("The router keeps disconnecting.", "gender", FAIRNESS) == "The router keeps disconnecting."
    assert make_variant("I'm 71 and retired, my grandkids help.", "age_band", FAIRNESS) == "I'm 24 and employed, my kids help."


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
    assert bootstrap_ci(lambda idx: 1.0, 50, 50, 0.95, 1) == [1.0, 1.0]
    lo, hi = bootstrap_ci(lambda idx: sum(idx) / len(idx), 100, 200, 0.95, 1)
    assert lo < 49.5 < hi


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

    def suffix_logprobs(self, prefix, suffixes):
        codes = ["".join(chr(t) for t in s).rstrip(".") for s in suffixes]
        if self.memorised:
            return [10.0 if c == self.secret else -float(int(c) % 97) for c in codes]
        return [-float(int(c) % 97) for c in codes]


def test_canary_exposure_is_high_when_memorised_and_low_when_not():
    canary = {"ticket_id": "CANARY-1", "message": "m", "category": "account_access", "priority": "medium", "secret": "000096"}
    hi = canary_exposure(FakeScorer("000096", True), [canary], 100, seed=1)[0]
    lo = canary_exposure(FakeScorer("000096", False), [canary], 100, seed=1)[0]
    assert hi["rank"] == 1 and hi["exposure"] == pytest.approx(math.log2(101), abs=1e-3)
    assert lo["exposure"] < 1.0


def test_regurgitation_counts_raw_values():
    out = regurgitation(["reply with john.doe@example.com", "nothing here", "Ana said hi"], {"john.doe@example.com", "Ana", "Banana"}, None)
    assert out["regurgitated_pii_values"]["value"] == 2 and out["regurgitated_pii_values"]["n"] == 3
    clean = regurgitation(["<PERSON_0123456789> will call"], {"john.doe@example.com"}, lambda texts: [0 for _ in texts])
    assert clean["regurgitated_pii_values"]["value"] == 0 and clean["pii_like_output_rate"]["value"] == 0.0


def test_every_metric_is_defined_in_the_docs():
    from pipeline.evaluate import DEFINITIONS

    doc = (REPO / "docs" / "evaluation.md").read_text()
    for key, text in DEFINITIONS.items():
        assert f"`{key}` | {text} |" in doc


# Tiny-profile training strong enough for the tiny model to pick up patterns (seconds on CPU).
LEARNING = {
    "max_steps": 150, "batch_size": 8, "learning_rate": 0.01, "lora_r": 16, "lora_alpha": 32, "eval_interval": 150,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "checkpoint_interval": 0,
}  # fmt: skip
EVAL_TINY = {"generate_examples": 4, "regurgitation_examples": 4, "max_new_tokens": 24, "canary_candidates": 50}


def trained_project(root, tiny_model, bias: float = 0.0, rows: int = 1200, finetune=None, split=None):
    """A tiny project trained and evaluated end to end (`dvc repro evaluate`)."""
    import yaml

    from tests.conftest import make_tiny_project, run_cmd, write_yaml

    project = make_tiny_project(root, tiny_model, rows=rows, finetune={**LEARNING, **(finetune or {})})
    if bias:
        run_cmd(["python", "-m", "pipeline.synthesize", "--rows", str(rows), "--bias-strength", str(bias)], cwd=project, check=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"].update(EVAL_TINY)
    params["split"]["canaries"].update(split or {})
    write_yaml(project / "params.yaml", params)
    run_cmd(["dvc", "repro", "evaluate"], cwd=project, check=True)
    return project


@pytest.fixture(scope="module")
def fair_summary(tmp_path_factory, tiny_model):
    """The default (unbiased) tiny training run, evaluated: the baseline of the tests below."""
    from tests.conftest import read_json

    project = trained_project(tmp_path_factory.mktemp("fair") / "p", tiny_model)
    return read_json(project / "reports" / "eval_summary.json")


@pytest.mark.slow
def test_biased_training_data_gives_a_measurably_biased_model(tmp_path, tiny_model, fair_summary):
    from tests.conftest import read_json

    biased = read_json(trained_project(tmp_path / "biased", tiny_model, bias=1.0) / "reports" / "eval_summary.json")
    fair = fair_summary
    assert biased["finetuned.dpd.gender"] > fair["finetuned.dpd.gender"] + 0.05, (fair, biased)
    assert biased["finetuned.cf_priority_flip.gender"] > fair["finetuned.cf_priority_flip.gender"], (fair, biased)


@pytest.mark.slow
def test_memorisation_raises_canary_exposure(tmp_path, tiny_model, fair_summary):
    """Many epochs over a tiny set with repeated canaries: the exposure metric must see it."""
    from tests.conftest import read_json

    memorised = trained_project(
        tmp_path / "mem", tiny_model, rows=240, finetune={"max_steps": 400, "learning_rate": 0.02}, split={"repeats": 25}
    )
    summary = read_json(memorised / "reports" / "eval_summary.json")
    assert summary["finetuned.canary_exposure_max"] > fair_summary["finetuned.canary_exposure_max"] + 2.0, (fair_summary, summary)
    assert summary["finetuned.canary_exposure_max"] > summary["base.canary_exposure_max"] + 2.0
