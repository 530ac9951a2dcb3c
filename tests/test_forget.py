"""Right to erasure: `govtune forget`, the gate's erasure check and alias rules, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.common import scrubbing
from pipeline.common.erasure import erased_in, pseudonym_of
from pipeline.common.keys import DEMO_KEY, PseudonymKey
from pipeline.forget import cache_object, remove_records, subject_hash, trained_on
from pipeline.gate import APPROVED
from tests.conftest import read_json, run_cmd
from tests.test_gate import _test_policy

KEY = PseudonymKey(DEMO_KEY, "demo")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_pseudonym_is_the_one_scrub_writes():
    digest = subject_hash(KEY, "customer_id", "CUST-000042")
    assert pseudonym_of("customer_id", digest) == scrubbing.scrub_identifier(KEY, "customer_id", "CUST-000042")
    assert "CUST-000042" not in digest and len(digest) == 64


def test_remove_records_drops_the_subject_and_its_spans_only(tmp_path):
    raw = _jsonl(tmp_path / "tickets.jsonl", [
        {"ticket_id": "T1", "customer_id": "C1"}, {"ticket_id": "T2", "customer_id": "C2"},
        {"ticket_id": "T3", "customer_id": "C1"}, {"ticket_id": "T4", "customer_id": "C10"},
    ])  # fmt: skip
    spans = _jsonl(tmp_path / "spans.jsonl", [{"ticket_id": t, "value": t} for t in ("T1", "T2", "T3", "T3", "T4")])
    assert remove_records(raw, spans, "customer_id", "C1") == (2, 3)
    assert [r["ticket_id"] for r in _rows(raw)] == ["T2", "T4"]  # C10 is not C1
    assert [s["ticket_id"] for s in _rows(spans)] == ["T2", "T4"]
    assert remove_records(raw, spans, "customer_id", "C1") == (0, 0)


def test_membership_from_the_dvc_cache_and_unknown_when_gone(tmp_path):
    pseudo = pseudonym_of("customer_id", subject_hash(KEY, "customer_id", "C1"))
    obj = cache_object(tmp_path, "ab" + "0" * 30)
    obj.parent.mkdir(parents=True)
    obj.write_text(json.dumps({"customer_id": pseudo}) + "\n")
    assert trained_on(tmp_path, "ab" + "0" * 30, [pseudo.encode()]) is True
    assert trained_on(tmp_path, "ab" + "0" * 30, [b"CUSTOMER-P000000000000"]) is False
    assert trained_on(tmp_path, "cd" + "0" * 30, [pseudo.encode()]) is None  # not in the cache: unknown
    assert trained_on(tmp_path, None, [pseudo.encode()]) is None


def test_erased_in_counts_records_by_pseudonym(tmp_path):
    entries = [{"subject": subject_hash(KEY, "customer_id", "C1"), "column": "customer_id"}]
    train = _jsonl(tmp_path / "train.jsonl", [
        {"customer_id": pseudonym_of("customer_id", entries[0]["subject"])},
        {"customer_id": scrubbing.scrub_identifier(KEY, "customer_id", "C2")},
    ])  # fmt: skip
    assert erased_in(train, "customer_id", entries) == 1
    assert erased_in(train, "customer_id", []) == 0


@pytest.mark.slow
def test_forget_end_to_end(tmp_path, tiny_built):
    """Champion v1 -> forget a subject in its train set -> v1 flagged, repro -> v2 promoted without them."""
    import mlflow

    project = tiny_built.clone(tmp_path / "project")
    _test_policy(project, [])  # the provenance and privacy rules: the tiny model can pass them
    run_cmd(["dvc", "repro"], cwd=project, check=True)  # the gate re-judges v1 on them
    decision = read_json(project / "reports" / "gate_decision.json")
    assert decision["decision"] == APPROVED and decision["registry"]["champion_after"] == "1"

    raw_path = project / "data" / "raw" / "tickets.jsonl"
    train_ids = {r["customer_id"] for r in _rows(project / "data" / "splits" / "train.jsonl")}
    raw = _rows(raw_path)
    subject = next(
        r["customer_id"] for r in raw if scrubbing.scrub_identifier(KEY, "customer_id", r["customer_id"]) in train_ids
    )
    records = sum(r["customer_id"] == subject for r in raw)
    digest = subject_hash(KEY, "customer_id", subject)
    pseudo = pseudonym_of("customer_id", digest)
    # The subject also wrote in a batch not yet accepted, which monitoring scrubbed.
    mine = next(r for r in raw if r["customer_id"] == subject)
    batch = project / "data" / "raw" / "incoming" / "b1" / "tickets.jsonl"
    batch.parent.mkdir(parents=True)
    others = [r for r in raw if r["customer_id"] != subject][:3]
    batch.write_text(
        "".join(json.dumps({**r, "ticket_id": f"TCK-99{i:05d}"}) + "\n" for i, r in enumerate([mine, *others]))
    )
    scrubbed_copy = project / "reports" / "monitoring" / "b1" / "scrubbed.jsonl"
    scrubbed_copy.parent.mkdir(parents=True)
    scrubbed_copy.write_text(
        json.dumps({"ticket_id": "TCK-9900000", "customer_id": pseudo})
        + "\n"
        + json.dumps({"customer_id": "CUSTOMER-Pother"})
        + "\n"
    )

    out = run_cmd(["govtune", "forget", "--customer-id", subject, "--requested-by", "DPO desk", "--reason", "ticket DSR-7"],
                  cwd=project, check=True)  # fmt: skip
    assert f"removed {records + 1} record(s)" in out.stdout and "trained on the subject: 1" in out.stdout, out.stdout
    assert subject not in out.stdout + out.stderr
    assert all(r["customer_id"] != subject for r in _rows(raw_path)) and len(_rows(raw_path)) == len(raw) - records
    audit_text = (project / "audit" / "audit_log.jsonl").read_text()
    request = [e for e in map(json.loads, audit_text.splitlines()) if e["event"] == "erasure_request"]
    assert len(request) == 1 and request[0]["subject"] == digest and request[0]["affected_versions"] == ["1"]
    assert request[0]["records_removed"] == records + 1 and subject not in audit_text
    assert [r["customer_id"] for r in _rows(batch)] == [
        r["customer_id"] for r in others
    ]  # the batch's other records stay
    assert _rows(scrubbed_copy) == [{"customer_id": "CUSTOMER-Pother"}]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    name = decision["registry"]["registered_model"]
    assert client.get_model_version(name, "1").tags["govtune.erasure_pending"] == digest[:16]

    run_cmd(["dvc", "repro"], cwd=project, check=True)
    decision = read_json(project / "reports" / "gate_decision.json")
    by_id = {r["id"]: r for r in decision["rules"]}
    assert by_id["no_erased_subject_in_training"]["status"] == "passed"
    assert decision["decision"] == APPROVED and decision["candidate_version"] == "2"
    assert decision["registry"]["champion_after"] == "2" and decision["registry"]["erasure_pending_versions"] == ["1"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    with pytest.raises(mlflow.exceptions.MlflowException):  # v1 is not kept as the rollback either
        client.get_model_version_by_alias(name, "previous")
    report = read_json(project / "reports" / "compliance_report.json")
    listed = report["datasheet"]["erasure_requests"]
    assert [e["subject"] for e in listed] == [digest[:16]] and listed[0]["affected_versions"] == ["1"]
    assert digest[:16] in (project / "reports" / "compliance_report.html").read_text()

    # No record of the subject anywhere outside data/raw (the audit log holds the keyed hash only).
    hits = [
        str(p.relative_to(project))
        for p in project.rglob("*")
        if p.is_file() and not p.is_relative_to(project / "data" / "raw") and not p.is_relative_to(project / ".git")
        and (subject.encode() in (data := p.read_bytes()) or pseudo.encode() in data)
    ]  # fmt: skip
    assert hits == []
