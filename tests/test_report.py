"""Report stage and the auditor's CLI: report content, model card, signed manifest, verify, lineage.

One tiny-profile `dvc repro` (real stages, MLflow, DVC), then tampering: each changed file is
named by `govtune verify`; an edited audit-log entry breaks the chain.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import read_json, run_cmd
from tests.test_gate import _test_policy

KEY = "42" * 32  # a test signing key (Ed25519 private key bytes, hex)


def _flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def _check_rendering(html_path, out_dir):
    """A headless Chromium screenshot of the whole page: the decision badge at the top, the rule table's header band below."""
    import subprocess

    from PIL import Image

    from pipeline.report import CHROMIUM_FLAGS

    png = out_dir / "report.png"
    args = [
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={out_dir / 'profile'}",
        "--window-size=1280,16000",
        f"--screenshot={png}",
        html_path.resolve().as_uri(),
    ]
    subprocess.run(args, capture_output=True, timeout=120, check=True)
    img = Image.open(png).convert("RGB")

    def rows_with(colour: tuple[int, int, int], y0: int, y1: int) -> list[int]:
        return [y for y in range(y0, y1) if sum(img.getpixel((x, y)) == colour for x in range(0, 1280, 4)) > 20]

    assert rows_with((27, 127, 58), 0, 300), "the decision badge is not visible at the top"
    assert rows_with((219, 230, 247), 300, img.height), "the rule table (its header band) is not rendered"


@pytest.mark.slow
@pytest.mark.browser
def test_report_verify_and_tampering(tmp_path, tiny_built, monkeypatch):
    project = tiny_built.clone(tmp_path / "project")
    _test_policy(project, [])
    monkeypatch.setenv("GOVTUNE_SIGNING_KEY", KEY)
    rejudged = run_cmd(["dvc", "repro"], cwd=project, check=True)  # the policy edit re-runs gate and report (signed)
    assert "Running stage 'report'" in rejudged.stdout
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
    first_screen = page[: page.index('<h2 id="system">')]
    assert "signed (Ed25519)" in first_screen and "DEMO KEY" in first_screen  # signing and key status up front
    assert "{&quot;" not in page  # cells render tables, not raw JSON
    assert "EU AI Act Art. 72" in [c["ref"] for c in report["controls"]["ai_act_coverage"]] and "→ monitor" in page
    assert not any("not built" in n for n in report["controls"]["not_covered"])
    # Jinja2's autoescape: markup inside any value is shown as text, never run.
    from pipeline.report import render_html

    hostile = "<script>alert(1)</script>"
    report["rules"][0]["message"], report["system"]["purpose"] = hostile, hostile
    report["evaluation"]["counterfactual"]["base"] = {hostile: hostile}
    rendered = render_html(report, {})
    assert "<script>" not in rendered and rendered.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4
    examined = report["datasheet"]["label_examination"]["gender"]
    assert (
        "Training labels examined for bias" in page
        and examined["groups"]["female"]["n"] > 0
        and "escalation_gap_lower_bound" in examined
    )
    assert (
        'class="badge APPROVED"' in page
        and "data:image/png;base64," in page
        and "<link" not in page
        and 'src="http' not in page
    )
    # The PDF: the same page printed by headless Chromium; its outline lists the same sections.
    pdf = (reports / "compliance_report.pdf").read_bytes()
    titles = [t.decode() for t in re.findall(rb"/Title \(([^)]*)\)", pdf)]
    assert pdf.startswith(b"%PDF") and [t for t in titles if re.match(r"\d\. ", t)] == re.findall(
        r"<h2[^>]*>(\d\. [^<]*)</h2>", page
    )
    _check_rendering(reports / "compliance_report.html", tmp_path)
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
    values = {json.loads(row)["value"] for row in (project / "data/raw/pii_spans.jsonl").read_text().splitlines()}
    values = {v for v in values if len(v) >= 6}
    for path in (
        reports / "compliance_report.json",
        reports / "compliance_report.html",
        reports / "MODEL_CARD.md",
        reports / "gate_decision.json",
    ):
        text = path.read_text()
        assert not [v for v in values if v in text], f"raw PII in {path.name}"

    shown = run_cmd(["govtune", "report"], cwd=project, check=True).stdout.strip()
    assert shown == str((reports / "compliance_report.html").resolve())
    ok = run_cmd(["govtune", "verify"], cwd=project)
    assert ok.returncode == 0, ok.stderr
    lineage = run_cmd(["govtune", "lineage"], cwd=project, check=True).stdout
    from pipeline.common.tracking import dvc_md5

    assert "v1: APPROVED" in lineage and "trained by run" in lineage and "dataset train: digest" in lineage
    assert f"logged raw: digest {dvc_md5(project / 'data/raw/tickets.jsonl')}" in lineage, (
        lineage
    )  # back to the raw data

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


CELLS = [
    ({"success": True, "rows": 300}, ["<th>success</th><td>true</td>", "<th>rows</th><td>300</td>"]),
    (["a", "b", None], ["a, b, none"]),
    ({"split": {"train": 10}}, ['<table class="kv"><tr><th>train</th><td>10</td></tr></table>']),
    (None, ["n/a"]),
    ("<b>", ["&lt;b&gt;"]),
]


@pytest.mark.parametrize("value,shown", CELLS)
def test_report_cells_render_values_not_raw_json(value, shown):
    from pipeline.common.html import cell_html

    cell = cell_html(value)
    for part in shown:
        assert part in cell, cell
    assert "{" not in cell and "&quot;" not in cell


def test_fairness_section_carries_an_unjudged_attribute():
    """An attribute evaluate could not judge (one group too small) is reported as not judged, not a crash."""
    from pipeline.report import fairness_html, fairness_section

    metric = {"value": 0.1, "n": 60, "ci95": [0.0, 0.2]}
    group = {
        "n": 30,
        "category_accuracy": 0.5,
        "escalation_rate": 0.2,
        "escalation_rate_ci95": [0.1, 0.4],
        "too_small": False,
    }
    judged = {"groups": {"female": group, "male": group}, "demographic_parity_difference": metric, "small_groups": []}
    unjudged = {"error": "fewer than two groups with enough test records", "group_sizes": {"18-34": 24, "65+": 6}}
    evaluation = {"base": {"fairness": {"gender": judged, "age_band": unjudged}},
                  "finetuned": {"fairness": {"gender": judged, "age_band": unjudged}}}  # fmt: skip
    section = fairness_section(evaluation)
    assert section["gender"]["metrics"]["demographic_parity_difference"]["finetuned"] == metric
    assert set(section["gender"]["groups"]) == {"female", "male"}
    assert section["age_band"]["not_judged"] == unjudged["error"]
    assert section["age_band"]["group_sizes"] == {"18-34": 24, "65+": 6}
    page = fairness_html(section, {"fairness_gender": "R0VO", "fairness_age_band": "R0VO"})
    assert '<img alt="fairness_gender"' in page and '<img alt="fairness_age_band"' not in page
    assert (
        "Not judged: fewer than two groups with enough test records (test records per group: 18-34: 24, 65+: 6)" in page
    )
