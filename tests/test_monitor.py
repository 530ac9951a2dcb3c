"""Monitoring: the drift measures, and `govtune monitor` flagging a shifted batch end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml

from pipeline.monitor import chi2_p, embedding_drift, oov_rate, tvd, words
from pipeline.synthesize import SHIFT_PRODUCTS
from tests.conftest import REPO, make_tiny_project, read_json, run_cmd, write_yaml
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


@pytest.mark.slow
def test_monitor_flags_a_shifted_batch_and_passes_a_same_source_one(tmp_path, tiny_model):
    import mlflow

    project = make_tiny_project(tmp_path / "project", tiny_model, rows=600)
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
        run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "200", "--seed", "99", "--out-dir", f"data/incoming/{name}", *extra],
                cwd=project, check=True)  # fmt: skip
    shifted_text = (project / "data" / "incoming" / "shifted" / "tickets.jsonl").read_text()
    assert any(p in shifted_text for p in SHIFT_PRODUCTS)

    same = run_cmd(["govtune", "monitor", "data/incoming/same/tickets.jsonl", "--out", "reports/monitoring/same"], cwd=project)
    assert same.returncode == 0, same.stdout + same.stderr[-3000:]
    report = read_json(project / "reports" / "monitoring" / "same" / "monitoring_report.json")
    assert report["status"] == "ok" and report["breached_blocking_rules"] == []
    assert "OK" in same.stdout and "champion v1 tagged" in same.stdout

    shifted = run_cmd(["govtune", "monitor", "data/incoming/shifted/tickets.jsonl", "--out", "reports/monitoring/shifted"], cwd=project)
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
    tags = client.get_model_version(read_json(project / "reports" / "gate_decision.json")["registry"]["registered_model"], "1").tags
    assert tags["govtune.needs_review"] == "true" and tags["govtune.monitoring.status"] == "needs_review"
    run = client.get_run(tags["govtune.monitoring.run_id"])
    assert run.data.metrics["monitor/category_tvd"] == pytest.approx(d["category"]["tvd"])
    assert run.data.tags["govtune.champion_version"] == "1"
    first = json.loads(shifted_text.splitlines()[0])["message"]
    assert first[:40] not in json.dumps(drifted) + html  # measures and counts only: no record content

    # Retraining: the reviewed same-source batch is appended to the raw data; the gate judges the
    # new candidate against champion v1's value (the outcome on a tiny random model is not the point).
    raw_rows = len((project / "data" / "raw" / "tickets.jsonl").read_text().splitlines())
    run_cmd(["govtune", "monitor", "data/incoming/same/tickets.jsonl", "--accept"], cwd=project, check=True)
    assert len((project / "data" / "raw" / "tickets.jsonl").read_text().splitlines()) == raw_rows + 200
    again = run_cmd(["govtune", "monitor", "data/incoming/same/tickets.jsonl", "--accept"], cwd=project)
    assert again.returncode == 2 and "already in" in again.stderr
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    v2 = read_json(project / "reports" / "gate_decision.json")
    assert v2["candidate_version"] == "2"
    rule = next(r for r in v2["rules"] if r["id"] == "category_accuracy_not_below_champion")
    v1_value = next(r for r in v1["rules"] if r["id"] == "category_accuracy_not_below_champion")["observed"]
    assert rule["baseline"]["value"] == pytest.approx(v1_value)
    events = [json.loads(line)["event"] for line in (project / "audit" / "audit_log.jsonl").read_text().splitlines()]
    assert "batch_accepted" in events
