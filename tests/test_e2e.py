"""End to end: `dvc repro` on a fresh copy of the project, with the tiny model, offline.

The stages run as DVC runs them (subprocesses, network blocked). The first, full `dvc repro`
is the test run's shared tiny build (``tiny_built`` in conftest.py, which other end-to-end
tests start from too); this test checks what it printed and wrote, then goes on in a copy.
"""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline.report import STAGES
from tests.conftest import read_json, run_cmd, write_yaml


@pytest.fixture()
def tiny_project(tmp_path, tiny_built):
    return tiny_built.clone(tmp_path / "project")


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tiny_built, tiny_project):
    first = tiny_built  # the full `dvc repro` of a fresh tiny-profile project
    for stage in STAGES:  # the DAG as the report lists it
        assert f"Running stage '{stage}'" in first.stdout
    assert read_json(tiny_project / "reports" / "data_validation.json")["success"] is True
    pii = read_json(tiny_project / "reports" / "pii_report.json")
    assert pii["records"] == 300 and pii["totals"]["min_recall"] >= 0.95
    assert read_json(tiny_project / "reports" / "split_report.json")["customer_overlap"] == 0
    metrics = read_json(tiny_project / "reports" / "train_metrics.json")
    assert metrics["val_loss_final"] < metrics["val_loss_base"]
    # Counterfactual augmentation (on in the tiny profile): one copy per training ticket and attribute with a signal.
    added = metrics["counterfactual_examples"]
    assert added["gender"] > 0 and added["age_band"] > 0
    assert metrics["examples"] == sum(1 for _ in open(tiny_project / "data/splits/train.jsonl")) + sum(added.values())
    provenance = read_json(tiny_project / "models" / "adapter" / "provenance.json")
    assert provenance["counterfactual_augmentation"]["added"] == added
    assert (tiny_project / "models" / "adapter" / "adapter_model.safetensors").is_file()
    shown = run_cmd(["dvc", "metrics", "show", "--json"], cwd=tiny_project, check=True).stdout
    assert "val_loss_final" in shown
    plots = run_cmd(["dvc", "plots", "show", "--json"], cwd=tiny_project, check=True).stdout
    assert "train_loss.csv" in plots and "val_loss.csv" in plots
    evaluation = read_json(tiny_project / "reports" / "evaluation.json")
    for model in ("base", "finetuned"):
        quality = evaluation[model]["quality"]
        assert quality["category_accuracy"]["n"] > 0 and "ci95" in quality["category_accuracy"]
        assert "demographic_parity_difference" in evaluation[model]["fairness"]["gender"]
        assert len(evaluation[model]["privacy"]["canaries"]) == 3
    assert evaluation["surviving_signals"]["gender"], "gender terms must survive scrubbing"
    assert (tiny_project / "reports" / "eval_plots" / "fairness_gender.png").stat().st_size > 1000
    decision = read_json(tiny_project / "reports" / "gate_decision.json")  # the tiny random model is no good: caught
    assert decision["decision"] == "REJECTED" and "category_accuracy_floor" in decision["failing_rules"]
    assert decision["registry"]["registered"] and decision["registry"]["champion_after"] is None
    # Without a signing key the evidence is written unsigned, and the report says so.
    assert read_json(tiny_project / "reports" / "evidence_manifest.json")["signature"]["signed"] is False
    assert "<b>UNSIGNED</b>" in (tiny_project / "reports" / "compliance_report.html").read_text()
    assert run_cmd(["govtune", "verify"], cwd=tiny_project).returncode == 0
    # What each stage used (its ledger, its MLflow run) and the report's sum, cost and emissions.
    from pipeline.common.compute import MAKING

    ledgers = {s: read_json(tiny_project / "reports" / "compute" / f"{s}.json") for s in (*MAKING, "report")}
    assert ledgers["finetune"]["tokens"] == metrics["tokens"] > 0 and ledgers["evaluate"]["tokens"] > 0
    assert all(led["wall_s"] > 0 and led["peak_rss_mb"] > 0 for led in ledgers.values())
    total = read_json(tiny_project / "reports" / "compute.json")
    assert total["missing"] == [] and set(total["stages"]) == set(MAKING)
    assert total["totals"]["cpu_s"] == pytest.approx(sum(ledgers[s]["cpu_s"] for s in MAKING), abs=0.5)
    assert total["cost"]["total_eur"] > 0 and total["emissions"]["kg_co2e_per_kwh"] > 0
    assert "Compute, energy and cost" in (tiny_project / "reports" / "compliance_report.html").read_text()
    assert "## Compute" in (tiny_project / "reports" / "MODEL_CARD.md").read_text()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("govtune").experiment_id])
    finetune_run = next(r for r in runs if r.data.tags.get("govtune.stage") == "finetune")
    assert finetune_run.data.metrics["compute/tokens"] == metrics["tokens"]
    report_run = next(r for r in runs if r.data.tags.get("govtune.stage") == "report")
    assert report_run.data.metrics["compute_total/cpu_s"] == pytest.approx(total["totals"]["cpu_s"])
    prov = read_json(tiny_project / "models" / "base" / "provenance.json")
    assert prov["model_id"] == "tiny-llama" and prov["source"]["kind"] == "local_dir"
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    assert lock["stages"]["base_model"]["outs"][0]["path"] == "models/base"

    # Nothing changed: nothing re-runs.
    again = run_cmd(["dvc", "repro"], cwd=tiny_project, check=True)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    # A code edit makes stale exactly the stages that run the edited file (dvc.yaml's deps are
    # each stage's imports): the rule engine is the gate's and the monitor's, never the fine-tune's.
    for code, stale in (("pipeline/common/rules.py", {"gate", "monitor"}),
                        ("pipeline/common/training.py", {"finetune", "evaluate", "monitor"}),
                        ("pipeline/common/evidence.py", {"gate", "report"})):  # fmt: skip
        path = tiny_project / code
        before = path.read_text()
        path.write_text(before + "\n# an edit\n")
        status = yaml.safe_load(run_cmd(["dvc", "status", "--json"], cwd=tiny_project, check=True).stdout)
        path.write_text(before)
        assert set(status) == stale, (code, sorted(status))

    # A PII policy edit re-runs scrub and the PII benchmark (and what follows only if an output
    # changed), never upstream.
    pii_policy = tiny_project / "policies" / "pii.yaml"
    pii_policy.write_text(pii_policy.read_text().replace("US_SSN: {min_score: 0.3", "US_SSN: {min_score: 0.35"))
    edited = run_cmd(["dvc", "repro"], cwd=tiny_project, check=True)
    ran = set(re.findall(r"Running stage '(\w+)'", edited.stdout))
    assert (
        {"scrub", "pii_benchmark"}
        <= ran
        <= {"scrub", "pii_benchmark", "split", "finetune", "evaluate", "gate", "report", "monitor"}
    ), ran

    # Bad data stops the pipeline at validate: nothing downstream runs.
    raw = tiny_project / "data" / "raw" / "tickets.jsonl"
    raw.write_text(raw.read_text().replace('"category":"billing"', '"category":"complaints"', 1))
    blocked = run_cmd(["dvc", "repro"], cwd=tiny_project)
    assert blocked.returncode != 0 and "rule category_allowed (column category): 1 failing rows" in blocked.stderr
    assert "Running stage 'scrub'" not in blocked.stdout

    # The allowlist's expected hash no longer matches: the stage fails closed, naming file and hashes.
    allow = tiny_project / "policies" / "models.yaml"
    data = yaml.safe_load(allow.read_text())
    data["models"][-1]["files"]["model.safetensors"] = "f" * 64
    write_yaml(allow, data)
    failed = run_cmd(["dvc", "repro"], cwd=tiny_project)
    assert failed.returncode != 0
    assert "sha256 mismatch" in failed.stderr and "model.safetensors" in failed.stderr
    assert "f" * 64 in failed.stderr


@pytest.mark.slow
@pytest.mark.browser
def test_dvc_plots_show_draws_offline(tiny_project, tmp_path):
    """`dvc plots show` uses the page with Vega inlined (.dvc/config plots.html_template): no script
    is fetched, and headless Chromium draws every chart (a canvas per Vega plot)."""
    import subprocess

    from pipeline.report import CHROMIUM_FLAGS

    shown = run_cmd(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], cwd=tiny_project, check=True)
    assert "failed to load" not in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    plots = page.count("vegaEmbed(")
    assert plots >= 2 and "<script src=" not in page and "cdn.jsdelivr" not in page
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", (tmp_path / "plots" / "index.html").as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    assert dom.count("<canvas") >= plots, dom[:2000]
