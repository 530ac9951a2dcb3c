"""End-to-end leak audit: unique canary PII planted in the raw data, and the two secrets, must
not appear in anything the pipeline produced or touched, in plain text or a common encoding.

Searched: every file of the project after `dvc repro` (data outputs, models, reports, the
audit log, ``mlflow.db``, MLflow artifacts, the DVC cache and tmp) and the run's own output
(logs). Not searched: ``data/raw`` (the input; git-tracked, so it has no DVC cache entry) and
``.git`` (the copy's commit of the sources).
"""

from __future__ import annotations

import base64
import html
import json
import random
import secrets
import urllib.parse
from pathlib import Path

import pytest

from pipeline.common.io import save_jsonl
from tests.conftest import make_tiny_project, run_cmd

SKIP_DIRS = (".git", "data/raw")


def canary_values(rng: random.Random, existing: str) -> dict[str, str]:
    """One set of PII values that occur nowhere in the data (checked against ``existing``)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(rng.randrange(2**32))
    while True:
        values = {
            "PERSON": f"{fake.first_name()} {fake.last_name()}-{fake.last_name()}",
            "EMAIL_ADDRESS": f"{fake.user_name()}.{rng.randrange(10**5)}@{fake.domain_name()}",
            "PHONE_NUMBER": f"({rng.randrange(201, 989)}) {rng.randrange(200, 999)}-{rng.randrange(10**4):04d}",
            "CREDIT_CARD": fake.credit_card_number("mastercard"),
            "US_SSN": fake.ssn(),
            "ACCOUNT_ID": f"ACCT-{rng.randrange(10**6, 10**7)}",
            "EMPLOYEE_ID": f"EMP-{rng.randrange(10**4, 10**5)}",
            "CUSTOMER_ID": f"CUST-{rng.randrange(10**5, 10**6)}",
        }
        if all(v not in existing for v in values.values()):
            return values


def plant(raw: Path, spans_path: Path, count: int, seed: int = 5) -> list[dict[str, str]]:
    """Appends canary sentences to ``count`` tickets (and their spans to the sidecar)."""
    rng = random.Random(seed)
    text = raw.read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    spans = [json.loads(line) for line in spans_path.read_text(encoding="utf-8").splitlines()]
    planted = []
    for record in rng.sample(records, count):
        v = canary_values(rng, text)
        planted.append(v)
        record["customer_id"] = v["CUSTOMER_ID"]
        for field, pieces in {
            "message": [("My email is ", "EMAIL_ADDRESS"), (" and my phone is ", "PHONE_NUMBER"), (". The card is ", "CREDIT_CARD"),
                        (". For verification, my SSN is ", "US_SSN"), (". My account number is ", "ACCOUNT_ID"),
                        (". Thanks, ", "PERSON")],
            "reply": [(" Handled by support, ID ", "EMPLOYEE_ID")],
        }.items():  # fmt: skip
            out = record[field] + (" " if field == "message" else "")
            for lead, entity in pieces:
                out += lead
                spans.append({"ticket_id": record["ticket_id"], "field": field, "entity_type": entity,
                              "start": len(out), "end": len(out) + len(v[entity]), "value": v[entity]})  # fmt: skip
                out += v[entity]
            record[field] = out
    save_jsonl(raw, records)
    save_jsonl(spans_path, spans)
    return planted


def encodings(value: str) -> dict[str, bytes]:
    """The forms a value could take in a file: plain, case-folded, UTF-16, URL, HTML, hex, base64, digits only."""
    raw = value.encode()
    forms = {
        "utf-8": raw, "lower": value.lower().encode(), "utf-16-le": value.encode("utf-16-le"),
        "url": urllib.parse.quote(value).encode(), "url-plus": urllib.parse.quote_plus(value).encode(),
        "html": html.escape(value).encode(), "json": json.dumps(value)[1:-1].encode(), "hex": raw.hex().encode(),
    }  # fmt: skip
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 9:  # cards, SSNs, phones with their separators stripped
        forms["digits"] = digits.encode()
    for shift in range(3):  # base64 at each alignment: the characters that depend on the value alone
        encoded = base64.b64encode(b"\0" * shift + raw)
        inner = encoded[((shift + 2) // 3) * 4 : len(encoded) - 4]
        if len(inner) >= 8:
            forms[f"base64+{shift}"] = inner
    return forms


def search(project: Path, needles: dict[str, bytes], logs: str, skip: tuple[str, ...] = SKIP_DIRS) -> list[str]:
    """Every (file, needle) hit outside the skipped folders, and in the logs."""
    hits = [f"<logs>: {name}" for name, needle in needles.items() if needle in logs.encode()]
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if not path.is_file() or path.is_symlink() or any(rel == d or rel.startswith(d + "/") for d in skip):
            continue
        data = path.read_bytes()
        hits += [f"{rel}: {name}" for name, needle in needles.items() if needle in data]
    return hits


@pytest.mark.slow
def test_no_planted_pii_or_secret_outside_raw(tmp_path, tiny_model, monkeypatch):
    project = make_tiny_project(tmp_path / "p", tiny_model)
    planted = plant(project / "data" / "raw" / "tickets.jsonl", project / "data" / "raw" / "pii_spans.jsonl", count=6)
    pseudonym_key, signing_key = secrets.token_hex(32), secrets.token_hex(32)
    monkeypatch.setenv("GOVTUNE_PSEUDONYM_KEY", pseudonym_key)
    monkeypatch.setenv("GOVTUNE_SIGNING_KEY", signing_key)
    run = run_cmd(["dvc", "repro"], cwd=project, check=True)
    verify = run_cmd(["govtune", "verify"], cwd=project, check=True)
    logs = run.stdout + run.stderr + verify.stdout + verify.stderr

    # The run really used the planted data and both keys.
    pii = json.loads((project / "reports" / "pii_report.json").read_text())
    assert pii["records"] == 300 and pii["key"]["source"] == "env"
    manifest = json.loads((project / "reports" / "evidence_manifest.json").read_text())
    assert manifest["signature"]["signed"] is True
    raw_text = (project / "data" / "raw" / "tickets.jsonl").read_text()
    assert all(v in raw_text for values in planted for v in values.values())

    needles = {}
    for i, values in enumerate(planted):
        for entity, value in values.items():
            needles |= {f"canary{i}.{entity} ({form})": b for form, b in encodings(value).items()}
    key_bytes = bytes.fromhex(signing_key)
    needles |= {f"pseudonym key ({form})": b for form, b in encodings(pseudonym_key).items()}
    needles |= {f"signing key ({form})": b for form, b in encodings(signing_key).items()}
    needles |= {"signing key (raw bytes)": key_bytes, "signing key (base64)": base64.b64encode(key_bytes)}
    files = sum(1 for p in project.rglob("*") if p.is_file())
    assert files > 200 and (project / "mlflow.db").is_file() and any((project / ".dvc" / "cache").rglob("*"))
    hits = search(project, needles, logs)
    assert hits == [], "\n".join(hits[:50])
    # The search finds what is there: every planted value in data/raw when it is not skipped.
    control = search(project, needles, "", skip=(".git",))
    assert {h.split(" (")[0] for h in control} >= {
        f"data/raw/tickets.jsonl: {n.split(' (')[0]}" for n in needles if n.startswith("canary")
    }
