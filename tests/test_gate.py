"""Gate: rule judging, waivers, approvals, the decision, policy files, the audit chain.

Unit tests use hand-made evidence; ``test_gate_registry_flow`` runs the real stages with DVC
and MLflow on the tiny profile: reject, pending approval, approve, promote, a new candidate.
"""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
import yaml

from pipeline.common.audit import append_entry, read_log, verify_chain
from pipeline.common.config import validate
from pipeline.common.errors import GovtuneError
from pipeline.common.outputs import Status
from pipeline.common.policy import Approval, PromotionPolicy, Rule, RuleSet, Waiver
from pipeline.common.rules import judge_rule, resolve
from pipeline.gate import APPROVED, PENDING, REJECTED, apply_waivers, count_approvals, decide
from tests.conftest import REPO, read_json, run_cmd, write_yaml

EVIDENCE = {
    "evaluation": {
        "finetuned": {"quality": {"acc": {"value": 0.9}, "none": {"value": None}}, "fairness": {"gender": {"dpd": {"value": 0.05, "ci95": [0.01, 0.09]}}, "age": {"dpd": {"value": 0.3, "ci95": [0.2, 0.4]}}}},
        "base": {"quality": {"acc": {"value": 0.5}}, "fairness": {"gender": {"dpd": {"value": 0.04}}, "age": {"dpd": {"value": 0.1}}}},
    },
    "data_validation": {"success": True},
}  # fmt: skip


def rule(**overrides) -> Rule:
    fields = {
        "id": "r", "title": "a rule", "description": "a rule", "severity": "blocking", "owner": "me",
        "controls": ["EU AI Act Art. 15"], "evidence": "evaluation:finetuned.quality.acc.value", "comparator": ">=", "threshold": 0.8,
    } | overrides  # fmt: skip
    return Rule(**fields)


# Table test: (rule fields, champion values, expected result, expected status, phrase in the message)
JUDGE = [
    ("threshold holds", {}, None, "pass", "passed", ""),
    ("threshold fails", {"threshold": 0.95}, None, "fail", "failed", "0.9 not >= 0.95"),
    ("warning fails", {"threshold": 0.95, "severity": "warning"}, None, "fail", "warning", ""),
    ("bool holds", {"evidence": "data_validation:success", "comparator": "==", "threshold": True}, None, "pass", "passed", ""),
    ("wildcard one key fails", {"evidence": "evaluation:finetuned.fairness.*.dpd.value", "comparator": "<=", "threshold": 0.2}, None, "fail", "failed", "age=0.3"),
    ("base baseline holds", {"threshold": None, "baseline": {"against": "base", "evidence": "evaluation:base.quality.acc.value", "max_regression": 0}}, None, "pass", "passed", ""),
    ("base baseline per key fails", {"evidence": "evaluation:finetuned.fairness.*.dpd.value", "comparator": "<=", "threshold": None,
      "baseline": {"against": "base", "evidence": "evaluation:base.fairness.*.dpd.value", "max_regression": 0.1}}, None, "fail", "failed", "age=0.3"),
    ("no champion yet", {"threshold": None, "baseline": {"against": "champion", "max_regression": 0.02}}, None, "pass", "passed", "no champion yet"),
    ("champion better", {"threshold": None, "baseline": {"against": "champion", "max_regression": 0.02}}, {"r": 0.95}, "fail", "failed", "not >= 0.93"),
    ("champion within tolerance", {"threshold": None, "baseline": {"against": "champion", "max_regression": 0.02}}, {"r": 0.91}, "pass", "passed", ""),
    ("missing source", {"evidence": "pii_report:totals.residual_rate"}, None, "error", "error", "missing evidence: source 'pii_report'"),
    ("unknown key", {"evidence": "evaluation:finetuned.quality.acuracy.value"}, None, "error", "error", "no key 'acuracy' (have: acc, none)"),
    ("no value", {"evidence": "evaluation:finetuned.quality.none.value"}, None, "error", "error", "no value"),
    ("not a number", {"evidence": "evaluation:finetuned.quality.acc"}, None, "error", "error", "not a number"),
]  # fmt: skip


@pytest.mark.parametrize("name,fields,champion,result,status,phrase", JUDGE, ids=[j[0] for j in JUDGE])
def test_judge_rule(name, fields, champion, result, status, phrase):
    res = judge_rule(rule(**fields), EVIDENCE, champion)
    assert (res.result, res.status) == (result, status), res.message
    assert phrase in res.message


def test_resolve_fans_out_and_names_keys():
    assert resolve(EVIDENCE, "evaluation:finetuned.fairness.*.dpd.value") == {"gender": 0.05, "age": 0.3}
    assert resolve(EVIDENCE, "data_validation:success") == {"": True}
    assert resolve(EVIDENCE, "evaluation:finetuned.fairness.*.dpd.ci95.0") == {"gender": 0.01, "age": 0.2}
    with pytest.raises(KeyError, match="item 2 of a list of 2"):
        resolve(EVIDENCE, "evaluation:finetuned.fairness.gender.dpd.ci95.2")
    with pytest.raises(KeyError, match="not an object"):
        resolve(EVIDENCE, "evaluation:finetuned.fairness.gender.dpd.value.0")
    unmeasured = {
        "evaluation": {
            "finetuned": {"fairness": {"region": {"error": "fewer than two groups with enough test records"}}}
        }
    }
    with pytest.raises(KeyError, match="not measured: region: fewer than two groups with enough test records"):
        resolve(unmeasured, "evaluation:finetuned.fairness.*.dpd.value")


# Table test: rule fields that the policy model must refuse, and the phrase of the error.
BAD_RULES = [
    ("unknown control", {"controls": ["EU AI Act Art. 99"]}, "unknown control"),
    ("unknown source", {"evidence": "mlflow:metrics.acc"}, "unknown evidence source"),
    ("threshold and baseline", {"baseline": {"against": "base", "evidence": "evaluation:base.quality.acc.value", "max_regression": 0}}, "exactly one"),
    ("neither", {"threshold": None}, "exactly one"),
    ("champion with wildcard", {"threshold": None, "evidence": "evaluation:finetuned.fairness.*.dpd.value",
                                "baseline": {"against": "champion", "max_regression": 0}}, "no * in evidence"),
    ("bool with >=", {"threshold": True}, "needs comparator =="),
    ("base baseline without path", {"threshold": None, "baseline": {"against": "base", "max_regression": 0}}, "needs evidence"),
    ("bad path", {"evidence": "evaluation:finetuned..acc"}, "String should match pattern"),
    ("typo key", {"treshold": 0.5}, "unknown key"),
    ("number in the title", {"title": "Accuracy at least 0.80"}, "writes a number by hand"),
    ("unknown placeholder", {"title": "Accuracy at least {limit}"}, "placeholders: {threshold} or {max_regression}"),
    ("placeholder the rule lacks", {"title": "Accuracy within {max_regression:.2f}"}, "placeholders"),
]  # fmt: skip

# Table test: a title template, the rule's numbers, the title shown everywhere
TITLES = [
    ("Category accuracy at least {threshold:.2f}", 0.8, None, "Category accuracy at least 0.80"),
    ("At least {threshold:.0%} of answers are well formed", 0.9, None, "At least 90% of answers are well formed"),
    ("At most {threshold:g} values survive", 12.0, None, "At most 12 values survive"),
    ("No more than {max_regression:.2f} worse", None, 0.02, "No more than 0.02 worse"),
    ("Category macro-F1 at least {threshold}", 0.75, None, "Category macro-F1 at least 0.75"),  # the 1 of F1 is a name
    ("Data contract passed", True, None, "Data contract passed"),
]  # fmt: skip


@pytest.mark.parametrize("template,threshold,max_regression,shown", TITLES)
def test_rule_titles_are_rendered_from_the_rule(template, threshold, max_regression, shown):
    from pipeline.common.policy import render_title

    assert render_title(template, threshold, max_regression) == shown
    fields = (
        {"title": template, "threshold": threshold}
        if max_regression is None
        else {
            "title": template,
            "threshold": None,
            "baseline": {"against": "champion", "max_regression": max_regression},
        }
    )
    if isinstance(threshold, bool):
        fields |= {"evidence": "data_validation:success", "comparator": "=="}
    assert rule(**fields).title == shown


@pytest.mark.parametrize("name,fields,phrase", BAD_RULES, ids=[b[0] for b in BAD_RULES])
def test_bad_rules_are_refused_with_file_and_key(name, fields, phrase):
    fields = {k: v for k, v in rule().model_dump(mode="json").items() if v is not None} | fields
    data = {"rules": [{k: v for k, v in fields.items() if v is not None}]}  # None = leave the key out
    with pytest.raises(GovtuneError) as info:
        validate(RuleSet, data, "policies/privacy.yaml")
    assert "policies/privacy.yaml" in str(info.value) and "rules.0" in str(info.value)
    assert phrase in str(info.value)


def test_the_shipped_rule_files_cover_the_required_areas():
    """The default rules cover what the issue lists, and every rule cites known controls."""
    from pipeline.common.policy import check_rule_ids, load_promotion_policy, load_rule_set

    rules = check_rule_ids(
        {
            "p": load_promotion_policy(REPO / "policies/promotion.yaml"),
            "q": load_rule_set(REPO / "policies/privacy.yaml"),
        }
    )
    paths = " ".join(r.evidence for r in rules)
    for needle in ("data_validation:success", "pii_report:entities.*.recall", "residual_rate", "checks:base_model_approved",
                   "category_accuracy", "demographic_parity_difference", "cf_priority_flip_rate", "canary_exposure_max",
                   "regurgitated_pii_values", "checks:evaluation_of_this_adapter"):  # fmt: skip
        assert needle in paths
    assert any(r.baseline and r.baseline.against == "base" for r in rules)
    assert any(r.baseline and r.baseline.against == "champion" for r in rules)


def waiver(**overrides) -> Waiver:
    fields = {
        "rule": "r",
        "reason": "known NER gap, ticket 123",
        "approver": "DPO",
        "created": date(2026, 11, 1),
        "expires": date(2026, 12, 31),
    }
    return Waiver(**(fields | overrides))


@pytest.mark.parametrize(
    "waivers,today,status,state,expired",
    [
        ([waiver()], date(2026, 11, 24), "waived", "applied", 0),
        ([waiver()], date(2027, 1, 1), "failed", "expired", 1),
        ([waiver()], date(2026, 10, 1), "failed", "not_yet_valid", 0),
        ([waiver(scope="gender")], date(2026, 11, 24), "failed", "out_of_scope", 0),
        ([waiver(scope="age")], date(2026, 11, 24), "waived", "applied", 0),
        ([waiver(rule="other")], date(2026, 11, 24), "failed", None, 0),
    ],
    ids=["valid", "expired", "not yet valid", "other scope", "matching scope", "other rule"],
)
def test_waivers(waivers, today, status, state, expired):
    res = judge_rule(
        rule(evidence="evaluation:finetuned.fairness.*.dpd.value", comparator="<=", threshold=0.2), EVIDENCE, None
    )
    assert res.status == "failed"
    listed = apply_waivers([res], waivers, today)
    assert res.status == status and isinstance(res.status, Status)  # a waiver sets a word of the enum
    assert res.to_json()["status"] == status  # and the decision can still be written
    assert (res.waiver or {}).get("state") == state
    assert len(listed) == expired


def test_errors_cannot_be_waived():
    res = judge_rule(rule(evidence="pii_report:totals.x"), EVIDENCE, None)
    apply_waivers([res], [waiver()], date(2026, 11, 24))
    assert res.status == "error"
    assert decide([res], {"satisfied": True}) == REJECTED


def test_waiver_longer_than_a_year_is_refused():
    with pytest.raises(ValueError, match="at most a year"):
        waiver(expires=date(2028, 1, 1))


POLICY = PromotionPolicy(alias="champion", previous_alias="previous", fail_on_reject=True,
                         approvals={"required": [{"role": "risk_officer", "count": 1}]}, rules=[rule()])  # fmt: skip


def approval(**overrides) -> Approval:
    fields = {"registered_model": "m", "version": "2", "evidence_hash": "a" * 64, "approver": "Ann", "role": "risk_officer",
              "approved_at": "2026-11-24T10:00:00+00:00"}  # fmt: skip
    return Approval(**(fields | overrides))


@pytest.mark.parametrize(
    "approvals,satisfied,ignored_phrase",
    [
        ([approval()], True, None),
        ([approval(evidence_hash="b" * 64)], False, "other evidence"),
        ([approval(version="1")], False, "not this candidate"),
        ([approval(role="intern")], False, "not required"),
        ([], False, None),
    ],
    ids=["matching", "other evidence", "other version", "other role", "none"],
)
def test_count_approvals(approvals, satisfied, ignored_phrase):
    counted = count_approvals(POLICY, approvals, "m", "2", "a" * 64)
    assert counted["satisfied"] is satisfied
    if ignored_phrase:
        assert ignored_phrase in counted["ignored"][0]["ignored_because"]


def test_decide():
    passed = judge_rule(rule(), EVIDENCE, None)
    warned = judge_rule(rule(threshold=0.95, severity="warning"), EVIDENCE, None)
    failed = judge_rule(rule(threshold=0.95), EVIDENCE, None)
    assert decide([passed, warned], {"satisfied": True}) == APPROVED
    assert decide([passed, warned], {"satisfied": False}) == PENDING
    assert decide([passed, failed], {"satisfied": True}) == REJECTED


# --- audit log ---------------------------------------------------------------------------------


def test_audit_chain_detects_edits_removals_and_refuses_to_append(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(3):
        append_entry(log, "gate_decision", {"decision": "APPROVED", "version": str(i + 1)})
    assert verify_chain(log) == []
    entries = read_log(log)
    assert [e["seq"] for e in entries] == [1, 2, 3] and entries[1]["prev"] == entries[0]["hash"]

    lines = log.read_text().splitlines()
    edited = json.loads(lines[1]) | {"decision": "REJECTED"}
    log.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    problems = verify_chain(log)
    assert any(f"{log}:2: hash does not match" in p for p in problems), problems
    with pytest.raises(GovtuneError, match="hash chain is broken"):
        append_entry(log, "gate_decision", {})

    log.write_text("\n".join([lines[0], lines[2]]) + "\n")  # an entry removed
    assert any("seq is 3, expected 2" in p for p in verify_chain(log))


# --- the stage, for real ---------------------------------------------------------------------

# A test policy with the rules a tiny random model can be judged on deterministically: the data,
# provenance and privacy rules of the shipped files (quality floors are for a real model).
KEEP = {"data_contract_passed", "pii_scrubbing_enabled", "no_subject_in_two_splits", "base_model_approved", "adapter_lineage_intact", "adapter_files_intact",
        "trained_on_current_split", "evaluation_is_fresh", "no_regurgitated_pii", "no_erased_subject_in_training"}  # fmt: skip


def _test_policy(project, approvals_required: list[dict]) -> None:
    for name in ("promotion.yaml", "privacy.yaml"):
        path = project / "policies" / name
        data = yaml.safe_load(path.read_text())
        data["rules"] = [r for r in data["rules"] if r["id"] in KEEP]
        if name == "promotion.yaml":
            data["approvals"]["required"] = approvals_required
        write_yaml(path, data)


def _stop_on_reject(project) -> None:
    """The shipped setting (make_tiny_project turns it off for the other end-to-end tests)."""
    promotion = project / "policies" / "promotion.yaml"
    promotion.write_text(promotion.read_text().replace("fail_on_reject: false", "fail_on_reject: true"))


def _ran(proc) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", proc.stdout))


@pytest.mark.slow
def test_gate_registry_flow(tmp_path, tiny_built):
    import mlflow

    project = tiny_built.clone(tmp_path / "project")  # built with fail_on_reject off: REJECTED v1, recorded
    decision_path = project / "reports" / "gate_decision.json"
    _stop_on_reject(project)

    # 1. The shipped policy rejects the tiny random model: dvc repro fails after the decision and report are written.
    first = run_cmd(["dvc", "repro"], cwd=project)
    assert first.returncode != 0, first.stderr[-2000:]
    assert _ran(first) == {"gate", "report"}, first.stdout  # the policy file changed, nothing upstream
    decision = read_json(decision_path)
    assert decision["decision"] == REJECTED and "category_accuracy_floor" in decision["failing_rules"]
    assert (
        "govtune: REJECTED" in first.stderr
        and "category_accuracy_floor" in first.stderr
        and "gate_decision.json" in first.stderr
    )
    assert (project / "reports" / "compliance_report.html").is_file()
    assert decision["candidate_version"] == "1" and decision["registry"]["champion_after"] is None
    by_id = {r["id"]: r for r in decision["rules"]}
    assert by_id["category_accuracy_floor"]["observed"] < 0.8 and by_id["category_accuracy_floor"]["controls"]
    assert by_id["evaluation_is_fresh"]["status"] == "passed" and by_id["base_model_approved"]["status"] == "passed"
    # dvc repro stopped at the failing report stage, before the independent monitor stage.
    assert "monitor" not in _ran(first)
    run_cmd(["dvc", "repro", "monitor"], cwd=project, check=True)

    # 2. A policy edit re-runs only the gate; approvals required: PENDING, same version, no alias.
    _test_policy(project, [{"role": "risk_officer", "count": 1}])
    second = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert _ran(second) == {"gate", "report"}, second.stdout
    decision = read_json(decision_path)
    assert decision["decision"] == PENDING and decision["candidate_version"] == "1"
    evidence_v1 = decision["evidence"]["hash"]

    # 3. Wrong role is refused; the right approval is recorded, bound to the evidence, and promotes.
    wrong = run_cmd(
        ["govtune", "approve", "--version", "1", "--approver", "Ann Auditor", "--role", "intern"], cwd=project
    )
    assert wrong.returncode == 2 and "not one the promotion policy asks for" in wrong.stderr
    run_cmd(
        ["govtune", "approve", "--version", "1", "--approver", "Ann Auditor", "--role", "risk_officer"],
        cwd=project,
        check=True,
    )
    saved = yaml.safe_load(next((project / "policies" / "approvals").glob("*.yaml")).read_text())
    assert saved["evidence_hash"] == evidence_v1
    third = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert _ran(third) == {"gate", "report"}
    decision = read_json(decision_path)
    assert decision["decision"] == APPROVED and decision["registry"]["champion_after"] == "1"

    # 4. A new candidate (another seed) is a new version; v1's approval does not count for it.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["seed"] = 99
    write_yaml(project / "params.yaml", params)
    fourth = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert {"finetune", "evaluate", "gate"} <= _ran(fourth)
    decision = read_json(decision_path)
    assert decision["decision"] == PENDING and decision["candidate_version"] == "2"
    assert decision["approvals"]["ignored"][0]["ignored_because"].startswith("approved other evidence")
    run_cmd(
        ["govtune", "approve", "--version", "2", "--approver", "Ann Auditor", "--role", "risk_officer"],
        cwd=project,
        check=True,
    )
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    decision = read_json(decision_path)
    assert decision["decision"] == APPROVED and decision["registry"]["champion_after"] == "2"

    # The registry: aliases, tags, and the link back to the training run.
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    name = "govtune-ticket-triage"
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "2" and str(client.get_model_version_by_alias(name, "previous").version) == "1"
    assert (
        champion.tags["govtune.decision"] == APPROVED
        and champion.tags["govtune.evidence_hash"] == decision["evidence"]["hash"]
    )
    assert champion.tags["govtune.policy_hash"] == decision["policy"]["hash"]
    training = client.get_run(champion.run_id)
    assert training.info.run_name == "finetune" and champion.tags["govtune.training_run_id"] == champion.run_id
    assert client.get_model_version(name, "1").tags["govtune.decision"] == APPROVED

    # The audit log: every decision and approval, chained.
    log = project / "audit" / "audit_log.jsonl"
    assert verify_chain(log) == []
    events = [
        (e["event"], e.get("decision"), e.get("version")) for e in read_log(log) if e["event"] != "evidence_manifest"
    ]
    # The first REJECTED is the shared build's own decision (with fail_on_reject off), the second this test's.
    assert events == [("gate_decision", REJECTED, "1"), ("gate_decision", REJECTED, "1"), ("gate_decision", PENDING, "1"), ("approval", None, "1"),
                      ("gate_decision", APPROVED, "1"), ("gate_decision", PENDING, "2"), ("approval", None, "2"), ("gate_decision", APPROVED, "2")]  # fmt: skip


@pytest.mark.slow
def test_gate_fails_closed_on_bad_policy_and_stale_evidence(tmp_path, tiny_built):
    project = tiny_built.clone(tmp_path / "project")
    _stop_on_reject(project)
    _test_policy(project, [])
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert read_json(project / "reports" / "gate_decision.json")["decision"] == APPROVED

    # Stale evidence: the evaluation names another adapter. Run the stage itself (DVC would re-evaluate).
    evaluation = project / "reports" / "evaluation.json"
    original = evaluation.read_text()
    data = read_json(evaluation)
    data["inputs"]["adapter_sha256"] = "0" * 64
    evaluation.write_text(json.dumps(data))
    run_cmd(["python", "-m", "pipeline.gate"], cwd=project, check=True)  # decides; the report stage enforces
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED and "evaluation_is_fresh" in decision["failing_rules"]
    assert "stale evidence" in decision["checks"]["evaluation_of_this_adapter"]["detail"]
    # The champion that no longer passes loses its alias.
    assert decision["registry"].get("alias_removed") is True and decision["registry"]["champion_after"] is None

    # Missing evidence: an error naming the source, never APPROVED.
    evaluation.unlink()
    run_cmd(["python", "-m", "pipeline.gate"], cwd=project, check=True)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED
    assert "missing evidence: source 'evaluation'" in json.dumps(decision["rules"])

    # A rule pointing at a metric that does not exist: an error, so REJECTED, naming the path.
    evaluation.write_text(original)
    privacy = project / "policies" / "privacy.yaml"
    rules = yaml.safe_load(privacy.read_text())
    rules["rules"][0]["evidence"] = "evaluation:finetuned.quality.accuracy_typo.value"
    write_yaml(privacy, rules)
    run_cmd(["python", "-m", "pipeline.gate"], cwd=project, check=True)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED and "no key 'accuracy_typo'" in json.dumps(decision["rules"])

    # A typo in a policy: exit 2 naming file, line and key; the decision of the run before is removed.
    assert (project / "reports" / "gate_decision.json").is_file()
    promotion = project / "policies" / "promotion.yaml"
    before = promotion.read_text()
    promotion.write_text(before.replace("threshold: 0", "treshold: 0", 1))
    bad = run_cmd(["python", "-m", "pipeline.gate"], cwd=project)
    assert bad.returncode == 2 and "promotion.yaml" in bad.stderr and "treshold: unknown key" in bad.stderr
    assert not (project / "reports" / "gate_decision.json").exists()

    # A duplicate key (a second `threshold:` that would invert the rule): exit 2 naming both lines.
    lines = before.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "threshold: true" in line)
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    promotion.write_text("".join(lines[: at + 1] + [f"{indent}threshold: false\n"] + lines[at + 1 :]))
    doubled = run_cmd(["python", "-m", "pipeline.gate"], cwd=project)
    assert (
        doubled.returncode == 2 and f"duplicate key 'rules.0.threshold' (lines {at + 1} and {at + 2})" in doubled.stderr
    )
    assert not (project / "reports" / "gate_decision.json").exists()


@pytest.mark.slow
def test_waivers_and_scrubbing_off_end_to_end(tmp_path, tiny_built):
    """The shipped policy on the tiny model: a valid waiver approves, an expired one rejects; no scrubbing rejects."""
    from datetime import timedelta

    project = tiny_built.clone(tmp_path / "project")  # the shipped policy's decision on the tiny model
    assert "Running stage" not in run_cmd(["dvc", "repro"], cwd=project, check=True).stdout
    decision = read_json(project / "reports" / "gate_decision.json")
    failing = decision["failing_rules"]
    assert decision["decision"] == REJECTED and "category_accuracy_floor" in failing
    assert not any(r.startswith(("demographic", "counterfactual", "pii_", "no_regurgitated")) for r in failing), failing

    today = date.today()
    waivers = project / "policies" / "waivers.yaml"

    def waive(created, expires):
        entries = [{"rule": r, "scope": "*", "reason": "tiny test model: quality is not its purpose", "approver": "Risk Committee",
                    "created": created.isoformat(), "expires": expires.isoformat()} for r in failing]  # fmt: skip
        write_yaml(waivers, {"waivers": entries})

    waive(today - timedelta(days=1), today + timedelta(days=30))
    valid = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert _ran(valid) == {"gate", "report"}
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == APPROVED and sorted(decision["waived_rules"]) == sorted(failing)
    waived = next(r for r in decision["rules"] if r["id"] == "category_accuracy_floor")
    assert waived["status"] == "waived" and waived["waiver"]["approver"] == "Risk Committee"
    assert decision["registry"]["champion_after"] == decision["candidate_version"]

    waive(today - timedelta(days=60), today - timedelta(days=1))
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED and len(decision["expired_waivers"]) == len(failing)
    assert next(r for r in decision["rules"] if r["id"] == "category_accuracy_floor")["waiver"]["state"] == "expired"

    # Scrubbing switched off (the waivers valid again): the PII rules reject.
    waive(today - timedelta(days=1), today + timedelta(days=30))
    pii = project / "policies" / "pii.yaml"
    pii.write_text(pii.read_text().replace("enabled: true", "enabled: false", 1))
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED
    assert {"pii_scrubbing_enabled", "pii_recall_per_entity"} <= set(decision["failing_rules"]), decision[
        "failing_rules"
    ]

    # No attribute can be judged (every group below min_group_size): the parity rules fail for want
    # of the metric, and the report is still written, saying "Not judged" with the group sizes.
    fairness = project / "policies" / "fairness.yaml"
    fairness.write_text(re.sub(r"min_group_size: \d+", "min_group_size: 100000", fairness.read_text(), count=1))
    unjudged = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert {"evaluate", "gate", "report"} <= _ran(unjudged)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == REJECTED and "demographic_parity_gap" in decision["failing_rules"]
    parity = next(r for r in decision["rules"] if r["id"] == "demographic_parity_gap")
    unmeasured = r"not measured: (gender|age_band|region): fewer than two groups"
    assert parity["status"] == "error" and re.search(unmeasured, parity["message"]), parity
    report = read_json(project / "reports" / "compliance_report.json")
    gender = report["evaluation"]["fairness"]["gender"]
    assert gender["not_judged"].startswith("fewer than two groups") and sum(gender["group_sizes"].values()) > 0
    assert "Not judged: fewer than two groups" in (project / "reports" / "compliance_report.html").read_text()


@pytest.mark.slow
def test_injected_label_bias_is_rejected_and_the_alias_stays(tmp_path, tiny_built_600):
    """Unbiased data promotes (the tiny model's quality failures waived); the same data with
    gender-biased labels is rejected on the training-label fairness rule, and `champion` stays."""
    from datetime import timedelta

    project = tiny_built_600.clone(tmp_path / "project")
    _stop_on_reject(project)
    first = run_cmd(["dvc", "repro"], cwd=project)
    assert _ran(first) == {"gate", "report"}, first.stdout
    decision = read_json(project / "reports" / "gate_decision.json")
    assert first.returncode != 0 and decision["decision"] == REJECTED
    assert "training_label_parity" not in decision["failing_rules"]
    examined = read_json(project / "reports" / "evaluation.json")["training_labels"]
    assert examined["gender"]["escalation_gap_lower_bound"]["value"] <= 0.10, examined["gender"]
    today = date.today()
    waivers = [{"rule": r, "scope": "*", "reason": "tiny test model: quality is not its purpose", "approver": "Risk Committee",
                "created": (today - timedelta(days=1)).isoformat(), "expires": (today + timedelta(days=30)).isoformat()}
               for r in decision["failing_rules"]]  # fmt: skip
    write_yaml(project / "policies" / "waivers.yaml", {"waivers": waivers})
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    approved = read_json(project / "reports" / "gate_decision.json")
    assert approved["decision"] == APPROVED and approved["registry"]["champion_after"] == approved["candidate_version"]

    # The same tickets with female tickets' priority lowered one level (synthesize.label_bias).
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "600", "--bias-strength", "1"], cwd=project, check=True)
    biased = run_cmd(["dvc", "repro"], cwd=project)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert biased.returncode != 0 and "REJECTED" in biased.stderr and "training_label_parity" in biased.stderr
    assert decision["decision"] == REJECTED and "training_label_parity" in decision["failing_rules"]
    rule = next(r for r in decision["rules"] if r["id"] == "training_label_parity")
    assert rule["failing_keys"] == ["gender"] and rule["observed"]["gender"] > 0.10, rule
    assert "EU AI Act Art. 10(2)(f)" in rule["controls"] and rule["waiver"] is None
    assert (
        decision["registry"]["champion_after"]
        == approved["registry"]["champion_after"]
        != decision["candidate_version"]
    )
    examined = read_json(project / "reports" / "evaluation.json")["training_labels"]["gender"]["groups"]
    assert examined["female"]["escalation_rate"] < examined["male"]["escalation_rate"] - 0.2

    # A routing bias (#20): the same tickets, those of customers aged 60+ labelled product_question.
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "600", "--bias-strength", "1", "--bias-target", "category",
             "--bias-attribute", "age_band", "--bias-group", "60+", "--bias-route-from", "any"], cwd=project, check=True)  # fmt: skip
    routed = run_cmd(["dvc", "repro"], cwd=project)
    decision = read_json(project / "reports" / "gate_decision.json")
    assert routed.returncode != 0 and "training_label_category_parity" in decision["failing_rules"], decision
    assert "training_label_parity" not in decision["failing_rules"]
    rule = next(r for r in decision["rules"] if r["id"] == "training_label_category_parity")
    assert rule["failing_keys"] == ["age_band"] and rule["observed"]["age_band"] > 0.10, rule
    examined = read_json(project / "reports" / "evaluation.json")["training_labels"]["age_band"]
    assert examined["category_gap_category"] == "product_question"
    assert examined["groups"]["60+"]["category_share"]["product_question"] > 0.9


@pytest.mark.slow
def test_files_audit_log_and_registry_agree_after_edit_revert_and_rejudge(tmp_path, tiny_built):
    """Issue 26: the gate and report never restore an old decision from DVC's run cache, `govtune
    verify` checks the registry and the audit log against the files, and a re-judge keeps the version."""
    import mlflow

    project = tiny_built.clone(tmp_path / "project")
    decision_path = project / "reports" / "gate_decision.json"
    promotion = project / "policies" / "promotion.yaml"
    original = promotion.read_text()
    edited_text = original.replace(
        "    threshold: 0.80              # share 0..1; raising it",
        "    threshold: 0.85              # share 0..1; raising it",
    )
    assert edited_text != original

    def title(rule_id: str) -> str:
        return next(r["title"] for r in read_json(decision_path)["rules"] if r["id"] == rule_id)

    # 1. Raise a threshold: gate and report re-run, and the title states the new threshold.
    promotion.write_text(edited_text)
    edited = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert _ran(edited) == {"gate", "report"}, edited.stdout
    assert title("category_accuracy_floor") == "Category accuracy at least 0.85"
    ok = run_cmd(["govtune", "verify"], cwd=project)
    assert ok.returncode == 0 and "UNSIGNED" in ok.stdout and "agree on the last decision" in ok.stdout, (
        ok.stdout + ok.stderr
    )

    # 2. Revert it: DVC runs the gate again (no run-cache restore of the old files), and the files,
    # the audit log and the registry all carry the reverted decision.
    promotion.write_text(original)
    reverted = run_cmd(["dvc", "repro"], cwd=project, check=True)
    assert _ran(reverted) == {"gate", "report"} and "skipping run" not in reverted.stdout, reverted.stdout
    decision = read_json(decision_path)
    assert title("category_accuracy_floor") == "Category accuracy at least 0.80"
    last = [e for e in read_log(project / "audit" / "audit_log.jsonl") if e["event"] == "gate_decision"][-1]
    assert (last["policy_hash"], last["evidence_hash"]) == (decision["policy"]["hash"], decision["evidence"]["hash"])
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    name, version = "govtune-ticket-triage", decision["registry"]["version"]
    tags = client.get_model_version(name, version).tags
    manifest = read_json(project / "reports" / "evidence_manifest.json")
    assert (
        tags["govtune.policy_hash"] == decision["policy"]["hash"]
        and tags["govtune.manifest_hash"] == manifest["manifest_hash"]
    )
    training_run = client.get_model_version(name, version).run_id
    assert (
        tags["govtune.compliance_report"] == f"runs:/{training_run}/compliance/compliance_report.html"
    )  # the artifact the auditor walks to
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0

    # 3. A hand-made disagreement fails verify, naming the tag and both values.
    client.set_model_version_tag(name, version, "govtune.policy_hash", "0" * 64)
    bad = run_cmd(["govtune", "verify"], cwd=project)
    assert bad.returncode == 1 and f"v{version}: tag govtune.policy_hash is 000000000000..." in bad.stderr, bad.stderr
    assert decision["policy"]["hash"][:12] in bad.stderr
    client.set_model_version_tag(name, version, "govtune.policy_hash", decision["policy"]["hash"])
    decisions = project / "audit" / "audit_log.jsonl"
    append_entry(
        decisions, "gate_decision", {"decision": PENDING, "version": version, "policy_hash": "x", "evidence_hash": "y"}
    )
    forged = run_cmd(["govtune", "verify"], cwd=project)
    assert forged.returncode == 1 and f"its last gate decision has decision {PENDING}" in forged.stderr, forged.stderr

    # 4. Re-judge (what docs/how-to.md says after a waiver expires): only gate and report, same version.
    versions = len(client.search_model_versions(f"name='{name}'"))
    rejudged = run_cmd(["govtune", "rejudge"], cwd=project, check=True)
    assert _ran(rejudged) == {"gate", "report"}, rejudged.stdout
    assert (
        read_json(decision_path)["registry"]["version"] == version
        and len(client.search_model_versions(f"name='{name}'")) == versions
    )
    assert (
        client.get_model_version(name, version).tags["govtune.weights_sha256"]
        == read_json(project / "reports/evaluation.json")["inputs"]["adapter_sha256"]
    )
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0
    piped = run_cmd(["bash", "-c", f"set -o pipefail; govtune lineage {version} | head -1"], cwd=project)
    assert (
        piped.returncode == 0 and piped.stdout.startswith("model govtune-ticket-triage") and "Error" not in piped.stderr
    ), piped.stderr
