"""The typed evidence between stages (pipeline/common/outputs.py): models, paths, lint, reading."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.cli import evidence_path_problems, lint_policies
from pipeline.common.errors import GovtuneError
from pipeline.common.outputs import Malformed, Status, path_problem, read_output, save_output
from pipeline.common.policy import Rule
from pipeline.common.rules import RuleResult, judge_rule
from tests.conftest import REPO

RULE = Rule(id="no_overlap", title="No customer in two splits", description="Splits are disjoint by customer.",
            severity="blocking", owner="data-governance", controls=["GDPR Art. 5(1)(c)"], evidence="split_report:customer_overlap",
            comparator="==", threshold=0)  # fmt: skip

# Table test: an evidence path, and the phrase of the problem (None: the path names a value)
PATHS = [
    ("evaluation:finetuned.quality.category_accuracy.value", None),
    ("evaluation:finetuned.fairness.*.demographic_parity_difference.ci95.0", None),  # any attribute, an interval's low end
    ("evaluation:finetuned.fairness.gender.equalized_odds_difference.value", None),
    ("evaluation:training_labels.*.escalation_gap_lower_bound.value", None),
    ("pii_report:entities.*.recall", None),
    ("pii_report:totals.residual_rate", None),
    ("checks:no_erased_subject_in_training", None),
    ("monitoring:drift.category.tvd", None),
    ("monitoring:champion.quality.category_accuracy.value", None),
    ("train_metrics:summary_key_of_a_future_version", None),  # open model: the training summary's keys
    ("evaluation:finetuned.quality.category_acuracy.value", "did you mean 'evaluation:finetuned.quality.category_accuracy'"),
    ("evaluaton:finetuned.quality.category_accuracy.value", "did you mean 'evaluation'"),
    ("pii_report:entities.*.recal", "did you mean 'pii_report:entities.*.recall'"),
    ("checks:no_erased_subjects_in_training", "did you mean 'checks:no_erased_subject_in_training'"),
    ("evaluation:finetuned.quality.category_accuracy.value.0", "no '0'"),  # a number is no list
    ("split_report:customer_overlap.count", "no 'count'"),
]  # fmt: skip


@pytest.mark.parametrize("path,phrase", PATHS, ids=[p for p, _ in PATHS])
def test_evidence_paths_are_checked_against_the_models(path, phrase):
    problem = path_problem(path)
    if phrase is None:
        assert problem is None, problem
    else:
        assert problem is not None and phrase in problem, problem


def test_every_shipped_rule_names_a_value_the_stages_write():
    for name in ("promotion.yaml", "privacy.yaml", "monitoring.yaml"):
        assert evidence_path_problems(REPO / "policies" / name) == [], name


def test_lint_names_the_file_line_and_nearest_path(tmp_path, monkeypatch):
    project = tmp_path / "p"
    project.mkdir()
    for item in ("params.yaml", "policies"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, project / item)
    privacy = project / "policies" / "privacy.yaml"
    text = privacy.read_text()
    assert "pii_report:totals.residual_rate" in text
    privacy.write_text(text.replace("pii_report:totals.residual_rate", "pii_report:totals.residual_rat", 1))
    line = next(
        i for i, t in enumerate(privacy.read_text().splitlines(), 1) if "residual_rat" in t and "residual_rate" not in t
    )
    monkeypatch.chdir(project)
    problems = lint_policies()
    assert len(problems) == 1, problems
    assert (
        f"policies/privacy.yaml:{line}:" in problems[0]
        and "did you mean 'pii_report:totals.residual_rate'" in problems[0]
    )


def test_a_stage_output_that_breaks_its_model_is_not_written(tmp_path):
    good = json.loads((REPO / "tests" / "fixtures" / "evidence" / "split_report.json").read_text())
    out = tmp_path / "split_report.json"
    save_output("split_report", out, good)
    assert read_output("split_report", out) == good
    with pytest.raises(GovtuneError, match="customer_overlap") as err:
        save_output("split_report", tmp_path / "bad.json", {**good, "customer_overlap": "none"})
    assert "malformed split_report evidence" in str(err.value)
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(GovtuneError, match="customers_overlap"):  # a renamed key is no silent new field
        save_output("split_report", tmp_path / "bad.json", {**good, "customers_overlap": 0})


def test_a_malformed_evidence_file_makes_its_rules_errors(tmp_path):
    from pipeline.gate import load_evidence

    good = json.loads((REPO / "tests" / "fixtures" / "evidence" / "split_report.json").read_text())
    path = tmp_path / "split_report.json"
    path.write_text(json.dumps({**good, "customer_overlap": [1]}))
    evidence = load_evidence({"split_report": path})
    assert isinstance(evidence["split_report"], Malformed)
    rule = RULE
    res = judge_rule(rule, evidence, None)
    assert res.status == Status.ERROR and "malformed evidence" in res.message and "customer_overlap" in res.message


def test_rule_status_words_come_from_the_enums():
    rule = RULE
    assert RuleResult(rule, "skip", "not_applicable").to_json()["status"] == "not_applicable"
    with pytest.raises(ValueError, match="'skipped'"):
        RuleResult(rule, "pass", "skipped")


DECISION_BREAKS = [
    ("decision", lambda d: d | {"decision": "MAYBE"}),
    ("rules.0.status", lambda d: d | {"rules": [d["rules"][0] | {"status": "ok"}]}),
    ("summary", lambda d: {k: v for k, v in d.items() if k != "summary"}),
    ("approved_by", lambda d: d | {"approved_by": "someone"}),
    (
        "checks.adapter_files_intact.value",
        lambda d: d | {"checks": d["checks"] | {"adapter_files_intact": {"value": "yes", "detail": ""}}},
    ),
]


@pytest.mark.parametrize("field,break_it", DECISION_BREAKS, ids=[f for f, _ in DECISION_BREAKS])
def test_the_gate_decision_has_a_model_too(tmp_path, field, break_it):
    """What the report and the CLI read: a decision word outside the enum, a rule status
    outside it, a missing or unknown key is not written."""
    good = json.loads((REPO / "tests" / "fixtures" / "evidence" / "gate_decision.json").read_text())
    save_output("gate_decision", tmp_path / "ok.json", good)
    assert read_output("gate_decision", tmp_path / "ok.json") == good
    with pytest.raises(GovtuneError) as err:
        save_output("gate_decision", tmp_path / "bad.json", break_it(good))
    assert f"gate_decision.json: {field}".replace("gate_decision.json", str(tmp_path / "bad.json")) in str(err.value)
    assert not (tmp_path / "bad.json").exists()
