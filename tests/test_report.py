"""Report stage and the auditor's CLI: report content, model card, signed manifest, verify, lineage.

One tiny-profile `dvc repro` (real stages, MLflow, DVC), then tampering: each changed file is
named by `govtune verify`; an edited audit-log entry breaks the chain.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import make_tiny_project, read_json, run_cmd
from tests.test_gate import _test_policy

KEY = "42" * 32  # a test signing key (Ed25519 private key bytes, hex)


def _flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_report_verify_and_tampering(tmp_path, tiny_model, monkeypatch):
    project = make_tiny_project(tmp_path / "project", tiny_model)
    _test_policy(project, [])
    monkeypatch.setenv("GOVTUNE_SIGNING_KEY", KEY)
    run_cmd(["dvc", "repro"], cwd=project, check=True)
    reports = project / "reports"

    report = read_json(reports / "compliance_report.json")
    assert report["decision"]["decision"] == "APPROVED" and report["signed"] is True
    assert {r["id"] for r in report["rules"]} == {r["id"] for r in read_json(reports / "gate_decision.json")["rules"]}
    assert [c["ref"] for c in report["controls"]["ai_act_coverage"]][0] == "EU AI Act Art. 10" and report["controls"][
        "not_covered"
    ]
    assert report["lineage"]["runs"]["finetune"] != "not found" and report["lineage"]["datasets"]["train"]
    page = (reports / "compliance_report.html").read_text()
    assert re.findall(r"<h2[^>]*>(\d)\.", page) == list("12345678")
    assert (
        'class="badge APPROVED"' in page
        and "data:image/png;base64," in page
        and "<link" not in page
        and 'src="http' not in page
    )
    card = (reports / "MODEL_CARD.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert (
        meta["license"] and meta["base_model"] and meta["datasets"] and meta["model-index"][0]["results"][0]["metrics"]
    )
    manifest = read_json(reports / "evidence_manifest.json")
    assert manifest["signature"]["signed"] and "models/adapter/adapter_model.safetensors" in manifest["files"]
    assert {
        "policies/promotion.yaml",
        "params.yaml",
        "requirements.lock",
        "data/raw/tickets.jsonl",
        "reports/compliance_report.html",
    } <= set(manifest["files"])

    # No raw PII in any report: search for every ground-truth value of the sidecar.
    values = {json.loads(l)["value"] for l in (project / "data/raw/pii_spans.jsonl").read_text().splitlines()}
    values = {v for v in values if len(v) >= 6}
    for path in (
        reports / "compliance_report.json",
        reports / "compliance_report.html",
        reports / "MODEL_CARD.md",
        reports / "gate_decision.json",
    ):
        text = path.read_text()
        assert not [v for v in values if v in text], f"raw PII in {path.name}"

    ok = run_cmd(["govtune", "verify"], cwd=project)
    assert ok.returncode == 0, ok.stderr
    lineage = run_cmd(["govtune", "lineage"], cwd=project, check=True).stdout
    assert "v1: APPROVED" in lineage and "trained by run" in lineage and "dataset train: digest" in lineage

    # Tampering: each changed file is named; restoring it makes verify pass again.
    for rel in (
        "models/adapter/adapter_model.safetensors",
        "policies/promotion.yaml",
        "reports/compliance_report.html",
    ):
        path = project / rel
        original = path.read_bytes()
        _flip_byte(path)
        bad = run_cmd(["govtune", "verify"], cwd=project)
        assert bad.returncode == 1 and f"FAIL {rel}: changed" in bad.stderr, bad.stderr
        path.write_bytes(original)
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0

    # A manifest re-signed with another key fails against the trusted public key.
    from pipeline.common.evidence import load_signing_key, public_hex

    trusted = public_hex(load_signing_key())
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0
    monkeypatch.setenv("GOVTUNE_SIGNING_PUBKEY", "ab" * 32)
    assert "not the trusted key" in run_cmd(["govtune", "verify"], cwd=project).stderr
    monkeypatch.setenv("GOVTUNE_SIGNING_PUBKEY", trusted)
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0

    # Editing an old audit-log entry breaks the chain, and verify reports it.
    log = project / "audit" / "audit_log.jsonl"
    lines = log.read_text().splitlines()
    first = json.loads(lines[0]) | {"actor": "someone-else"}  # rewrite who decided
    log.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    broken = run_cmd(["govtune", "verify"], cwd=project)
    assert broken.returncode == 1 and "audit_log.jsonl:1: hash does not match" in broken.stderr
