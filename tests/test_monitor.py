"""Monitoring: the drift measures, and `govtune monitor` flagging a shifted batch end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml

from pipeline.common.io import sha256_file
from pipeline.common.policy import RuleSet
from pipeline.monitor import champion_baselines, chi2_p, embedding_drift, judge, oov_rate, render_html, tvd, words
from pipeline.synthesize import SHIFT_PRODUCTS
from tests.conftest import REPO, read_json, run_cmd, write_yaml
from tests.test_gate import _test_policy


def test_tvd_and_chi2():
    same = Counter({"a": 50, "b": 50})
    assert tvd(same, Counter({"a": 5, "b": 5})) == 0.0
    assert tvd(Counter({"a": 10}), Counter({"b": 10})) == 1.0
    assert tvd(same, Counter({"a": 75, "b": 25})) == pytest.approx(0.25)
    assert chi2_p(same, Counter({"a": 50, "b": 50})) > 0.9
    assert chi2_p(same, Counter({"a": 90, "b": 10})) < 1e-6
    assert chi2_p(Counter({"a": 3}), Counter({"a": 4})) is None  # one category: no test


def test_oov_ignores_tags_and_case():
    vocab = set(words("My router blinks, please help"))
    assert oov_rate(vocab, ["my ROUTER blinks <PERSON>"]) == 0.0
    assert oov_rate(vocab, ["my quasar blinks"]) == pytest.approx(1 / 2)  # "my" is under 3 letters


def test_embedding_drift_detects_a_moved_mean_only():
    rng = np.random.default_rng(0)

    def sample(n, shift):
        x = rng.normal(size=(n, 16)) + shift
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    base = np.zeros(16)
    base[0] = 3
    moved = base.copy()
    moved[1] = 3
    same = embedding_drift(sample(100, base), sample(100, base), 100, 1)
    other = embedding_drift(sample(100, base), sample(100, moved), 100, 1)
    assert same["p"] > 0.05 and other["p"] < 0.02
    assert other["cosine_distance"] > 5 * same["cosine_distance"]


def _rules() -> RuleSet:
    return RuleSet.model_validate(yaml.safe_load((REPO / "policies" / "monitoring.yaml").read_text()))


def _report(labelled=True, champion=None) -> dict:
    """A monitoring report with passing drift measures; ``champion``: the re-evaluation part."""
    mix = {"tvd": 0.05, "chi2_p": 0.5}
    drift = {"message_length": {"ks": 0.05}, "vocabulary": {"oov_increase": 0.0}, "pii_entity_mix": {"tvd": 0.02},
             "embedding": {"cosine_distance": 0.01}, **({"category": mix, "priority": mix} if labelled else {})}  # fmt: skip
    return {"labelled": labelled, "drift": drift, "pii": {"min_recall": 1.0},
            "champion": champion or {"skipped": "no champion in the registry"}}  # fmt: skip


def _champion_eval(category_accuracy, dpd=0.05, dpd_margin=0.1):
    return {"version": "3", "adapter_sha256": "ab" * 32, "n": 200, "precision": "bf16",
            "quality": {"category_accuracy": {"value": category_accuracy, "n": 200}, "priority_accuracy": {"value": 0.6, "n": 200}},
            "fairness": {"gender": {"demographic_parity_difference": {"value": dpd, "n": 200, "ci95": [round(dpd - dpd_margin, 4), round(dpd + dpd_margin, 4)]}}},
            "counterfactual": {"gender": {"cf_priority_flip_rate": {"value": 0.0}}}}  # fmt: skip


def _statuses(report):
    return {r["id"]: r["status"] for r in report["rules"]}


def test_decay_rules_compare_with_the_champions_promotion_value():
    rules = _rules()
    baselines = {"champion_category_accuracy_holds": 0.90, "champion_priority_accuracy_holds": 0.62}
    held = _report(champion=_champion_eval(0.85))
    judge(held, rules, baselines)
    assert held["status"] == "ok" and _statuses(held)["champion_category_accuracy_holds"] == "passed"
    decayed = _report(champion=_champion_eval(0.75))  # 0.15 below its promotion value (allowed: 0.10)
    judge(decayed, rules, baselines)
    assert decayed["breached_blocking_rules"] == ["champion_category_accuracy_holds"]
    rule = next(r for r in decayed["rules"] if r["id"] == "champion_category_accuracy_holds")
    assert rule["baseline"]["value"] == 0.90 and rule["target"] == pytest.approx(0.80)
    assert "retrain recommended" in decayed["summary"]
    page = render_html({**decayed, "batch": "b1", "records": 200, "definitions": {}})
    assert "champion_category_accuracy_holds" in page and "The champion on this batch" in page and "0.75" in page
    unfair = _report(champion=_champion_eval(0.9, dpd=0.4))
    judge(unfair, rules, baselines)
    assert unfair["breached_blocking_rules"] == ["champion_demographic_parity_gap"]
    noisy = _report(champion=_champion_eval(0.9, dpd=0.3, dpd_margin=0.15))  # above the bar, but not certainly
    judge(noisy, rules, baselines)
    assert noisy["breached_blocking_rules"] == []


def test_a_decay_rule_without_the_champions_value_fails_closed():
    report = _report(champion=_champion_eval(0.95))
    judge(report, _rules(), {})  # a champion, but its decision judged no category accuracy
    rule = next(r for r in report["rules"] if r["id"] == "champion_category_accuracy_holds")
    assert rule["status"] == "error" and "add a promotion rule" in rule["message"] and rule["observed"] == 0.95
    assert "champion_category_accuracy_holds" in report["breached_blocking_rules"]


def test_rules_on_what_a_batch_cannot_have_are_not_applicable():
    no_champion = _report()
    judge(no_champion, _rules(), None)
    statuses = _statuses(no_champion)
    assert no_champion["status"] == "ok", no_champion["rules"]
    assert {k for k, v in statuses.items() if v == "not_applicable"} == {
        r.id for r in _rules().rules if r.id.startswith("champion_")
    }
    unlabelled = _report(labelled=False, champion={"skipped": "unlabelled batch"})
    judge(unlabelled, _rules(), None)
    statuses = _statuses(unlabelled)
    assert statuses["category_mix_stable"] == statuses["priority_mix_stable"] == "not_applicable"
    assert statuses["meaning_stable"] == "passed" and unlabelled["status"] == "ok"
    drifted = _report(labelled=False)
    drifted["drift"]["embedding"]["cosine_distance"] = 0.2  # not-applicable rules do not hide a breach
    judge(drifted, _rules(), None)
    assert drifted["breached_blocking_rules"] == ["meaning_stable"]


def test_champion_baselines_map_monitoring_evidence_to_the_promotion_rule(monkeypatch):
    class Version:
        tags = {"govtune.observed.category_accuracy_floor": "0.91", "govtune.observed.data_contract_passed": "True"}

    from pipeline.common.params import load_params

    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    out = champion_baselines(params, _rules().rules, Version())
    assert out == {"champion_category_accuracy_holds": 0.91}  # no promotion value of priority accuracy was tagged
    assert champion_baselines(params, _rules().rules, None) is None


def _champion_with_batches(tmp_path, built):
    """A copy of the 600-ticket build whose model is champion v1 (on the test policy plus the
    shipped no-regression-vs-champion rule), with two new batches: same source, and shifted."""
    project = built.clone(tmp_path / "project")
    _test_policy(project, [])
    promotion = project / "policies" / "promotion.yaml"  # plus the shipped no-regression-vs-champion rule
    shipped = yaml.safe_load((REPO / "policies" / "promotion.yaml").read_text())["rules"]
    data = yaml.safe_load(promotion.read_text())
    data["rules"] += [r for r in shipped if r["id"] == "category_accuracy_not_below_champion"]
    write_yaml(promotion, data)
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    v1 = read_json(project / "reports" / "gate_decision.json")
    assert v1["registry"]["champion_after"] == "1"
    for name, extra in (("same", []), ("shifted", ["--shift"])):
        run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "200", "--seed", "99", "--out-dir", f"data/raw/incoming/{name}", *extra],
                cwd=project, check=True)  # fmt: skip
    return project, v1


@pytest.mark.slow
def test_monitor_flags_a_shifted_batch_and_passes_a_same_source_one(tmp_path, tiny_built_600):
    import mlflow

    project, v1 = _champion_with_batches(tmp_path, tiny_built_600)
    shifted_text = (project / "data" / "raw" / "incoming" / "shifted" / "tickets.jsonl").read_text()
    assert any(p in shifted_text for p in SHIFT_PRODUCTS)

    same = run_cmd(
        ["govtune", "monitor", "data/raw/incoming/same/tickets.jsonl", "--out", "reports/monitoring/same"], cwd=project
    )
    assert same.returncode == 0, same.stdout + same.stderr[-3000:]
    report = read_json(project / "reports" / "monitoring" / "same" / "monitoring_report.json")
    assert report["status"] == "ok" and report["breached_blocking_rules"] == []
    assert "OK" in same.stdout and "champion v1 tagged" in same.stdout
    # The champion re-evaluated on the labelled batch: its logged adapter, the evaluate stage's
    # metrics, and the decay rule judged against the value v1 was promoted on.
    champ = report["champion"]
    assert champ["version"] == "1" and champ["n"] == 200 and champ["quality"]["category_accuracy"]["n"] == 200
    assert champ["adapter_sha256"] == sha256_file(
        project / "models" / "adapter" / "adapter_model.safetensors"
    )  # v1's adapter
    assert set(champ["fairness"]) == {"gender", "age_band", "region"} and "gender" in champ["counterfactual"]
    decay = next(r for r in report["rules"] if r["id"] == "champion_category_accuracy_holds")
    v1_accuracy = next(r for r in v1["rules"] if r["id"] == "category_accuracy_not_below_champion")["observed"]
    assert decay["status"] == "passed" and decay["baseline"]["value"] == pytest.approx(v1_accuracy)
    assert decay["observed"] == champ["quality"]["category_accuracy"]["value"]
    assert decay["target"] == pytest.approx(v1_accuracy - 0.10, abs=1e-4)

    shifted = run_cmd(
        ["govtune", "monitor", "data/raw/incoming/shifted/tickets.jsonl", "--out", "reports/monitoring/shifted"],
        cwd=project,
    )
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr[-3000:]
    drifted = read_json(project / "reports" / "monitoring" / "shifted" / "monitoring_report.json")
    breached = set(drifted["breached_blocking_rules"])
    assert {"category_mix_stable", "pii_entity_mix_stable", "vocabulary_stable"} <= breached, breached
    d, s = drifted["drift"], report["drift"]
    assert d["category"]["tvd"] > 3 * s["category"]["tvd"] and d["category"]["chi2_p"] < 1e-6
    assert d["embedding"]["cosine_distance"] > s["embedding"]["cosine_distance"]
    assert d["pii_entity_mix"]["batch"].get("ACCOUNT_ID", 0) < d["pii_entity_mix"]["reference"]["ACCOUNT_ID"] / 10
    assert "retrain recommended" in drifted["summary"] and "retrain recommended" in shifted.stdout
    html = (project / "reports" / "monitoring" / "shifted" / "monitoring_report.html").read_text()
    assert "category_mix_stable" in html and "needs_review" in html

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    tags = client.get_model_version(
        read_json(project / "reports" / "gate_decision.json")["registry"]["registered_model"], "1"
    ).tags
    assert tags["govtune.needs_review"] == "true" and tags["govtune.monitoring.status"] == "needs_review"
    run = client.get_run(tags["govtune.monitoring.run_id"])
    assert run.data.metrics["monitor/category_tvd"] == pytest.approx(d["category"]["tvd"])
    assert run.data.tags["govtune.champion_version"] == "1"
    first = json.loads(shifted_text.splitlines()[0])["message"]
    assert first[:40] not in json.dumps(drifted) + html  # measures and counts only: no record content

    # An unlabelled batch: checked on everything but the labels; label and champion rules are
    # not applicable (said so), the PII mix compares messages with messages.
    rows = [
        json.loads(line)
        for line in (project / "data" / "raw" / "incoming" / "same" / "tickets.jsonl").read_text().splitlines()
    ]
    unlabelled = project / "data" / "raw" / "incoming" / "unlabelled" / "tickets.jsonl"
    unlabelled.parent.mkdir()
    unlabelled.write_text(
        "".join(json.dumps({**r, "category": None, "priority": None, "reply": None}) + "\n" for r in rows)
    )
    plain = run_cmd(["govtune", "monitor", str(unlabelled.relative_to(project))], cwd=project)
    assert plain.returncode == 0, plain.stdout + plain.stderr[-3000:]
    blind = read_json(project / "reports" / "monitoring" / "unlabelled" / "monitoring_report.json")
    assert (
        not blind["labelled"]
        and "skipped" in blind["champion"]
        and blind["drift"]["pii_entity_mix"]["fields"] == ["message"]
    )
    assert {"category_mix_stable", "champion_category_accuracy_holds", "champion_demographic_parity_gap"} <= set(
        blind["not_applicable"]
    )
    unlabelled.unlink()

    # The DVC stage: every batch in data/raw/incoming, one summary; it exits 0 (fail_on_breach: false).
    staged = run_cmd(["dvc", "repro", "monitor"], cwd=project, check=True)
    assert "Running stage 'monitor'" in staged.stdout and "Running stage 'gate'" not in staged.stdout
    summary = read_json(project / "reports" / "monitoring" / "incoming" / "summary.json")
    assert {b["batch"]: b["status"] for b in summary["batches"]} == {"same": "ok", "shifted": "needs_review"}
    assert summary["status"] == "needs_review" and summary["champion_version"] == "1"
    assert (project / "reports" / "monitoring" / "incoming" / "shifted" / "monitoring_report.html").is_file()
    assert "Running stage" not in run_cmd(["dvc", "repro", "monitor"], cwd=project, check=True).stdout  # nothing new


@pytest.mark.slow
def test_an_accepted_batch_retrains_and_is_judged_against_the_champion(tmp_path, tiny_built_600):
    """Retraining: the reviewed same-source batch is appended to the raw data; the gate judges the
    new candidate against champion v1's value (the outcome on a tiny random model is not the point)."""
    project, v1 = _champion_with_batches(tmp_path, tiny_built_600)
    raw_rows = len((project / "data" / "raw" / "tickets.jsonl").read_text().splitlines())
    run_cmd(["govtune", "monitor", "data/raw/incoming/same/tickets.jsonl", "--accept"], cwd=project, check=True)
    assert len((project / "data" / "raw" / "tickets.jsonl").read_text().splitlines()) == raw_rows + 200
    again = run_cmd(["govtune", "monitor", "data/raw/incoming/same/tickets.jsonl", "--accept"], cwd=project)
    assert again.returncode == 2 and "already in" in again.stderr
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    v2 = read_json(project / "reports" / "gate_decision.json")
    assert v2["candidate_version"] == "2"
    rule = next(r for r in v2["rules"] if r["id"] == "category_accuracy_not_below_champion")
    v1_value = next(r for r in v1["rules"] if r["id"] == "category_accuracy_not_below_champion")["observed"]
    assert rule["baseline"]["value"] == pytest.approx(v1_value)
    events = [json.loads(line)["event"] for line in (project / "audit" / "audit_log.jsonl").read_text().splitlines()]
    assert "batch_accepted" in events
    summary = read_json(
        project / "reports" / "monitoring" / "incoming" / "summary.json"
    )  # the stage re-ran on the new data
    assert summary["accepted_batches"] == ["same"] and [b["batch"] for b in summary["batches"]] == ["shifted"]
