"""Stage pii_benchmark: the scrub's analyzer measured on a corpus we did not write, read by the
gate and shown in the compliance report beside our own data's figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.common.errors import GovtuneError
from pipeline.common.pii_eval import judge
from pipeline.pii_benchmark import load_corpus

REPO = Path(__file__).resolve().parents[1]


def test_judge_counts_a_span_caught_at_80_percent_of_its_characters_and_the_rest_kept():
    rows = [
        {
            "text": "call Anna Berg now",
            "spans": [{"start": 5, "end": 14, "entity_type": "PERSON", "value": "Anna Berg"}],
        }
    ]
    assert judge(rows, [[(5, 13)]])["entities"]["PERSON"]["recall"] == 1.0  # 7 of 8 letters
    assert judge(rows, [[(5, 12)]])["entities"]["PERSON"]["recall"] == 0.0  # 6 of 8: under 80 %
    assert judge(rows, [[(5, 9)]])["entities"]["PERSON"]["recall"] == 0.0  # "Anna" alone: half
    over = judge(rows, [[(0, 18)]])
    assert (
        over["direct_identifier_recall"] == 1.0 and over["non_pii_chars_kept"] == 0.0
    )  # a detector that matches everything


def test_scrubbing_switched_off_measures_nothing_found(tmp_path):
    from pipeline.common.policy import load_pii_policy
    from pipeline.pii_benchmark import measure

    policy = load_pii_policy(REPO / "policies" / "pii.yaml").model_copy(update={"enabled": False})
    rows = [
        {
            "text": "call Anna Berg now",
            "spans": [{"start": 5, "end": 14, "entity_type": "PERSON", "value": "Anna Berg"}],
        }
    ]
    result = measure(policy, rows, 8)
    assert (
        result["direct_identifier_recall"] == 0.0
        and result["verbatim_leaks_direct"] == 1
        and result["non_pii_chars_kept"] == 1.0
    )


def test_a_missing_or_mislabelled_corpus_is_refused_with_file_and_line(tmp_path):
    with pytest.raises(GovtuneError, match="no PII benchmark corpus"):
        load_corpus(tmp_path / "absent.jsonl", 10_000)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "hi Bo", "spans": [{"start": 3, "end": 5, "entity_type": "PERSON", "value": "Bo"}]}\n'
                   '{"text": "hi Al", "spans": [{"start": 0, "end": 2, "entity_type": "PERSON", "value": "Al"}]}\n')  # fmt: skip
    with pytest.raises(GovtuneError, match=r"c\.jsonl:2.*does not point at its value"):
        load_corpus(bad, 10_000)


@pytest.mark.slow
def test_the_gate_judges_the_independent_figure_and_the_report_shows_both(tiny_built, tmp_path):
    from tests.conftest import run_cmd

    project = tiny_built.clone(tmp_path / "p")
    bench = json.loads((project / "reports/pii_benchmark.json").read_text())
    assert bench["corpus"]["sources"] == ["presidio-evaluator"] and bench["corpus"]["sentences"] == 1000
    assert 0.0 < bench["direct_identifier_recall"] <= 1.0 and bench["non_pii_chars_kept"] >= 0.9
    rules = {r["id"]: r for r in json.loads((project / "reports/gate_decision.json").read_text())["rules"]}
    assert rules["pii_recall_independent_corpus"]["observed"] == bench["direct_identifier_recall"]
    assert rules["pii_keeps_other_text_independent_corpus"]["observed"] == bench["non_pii_chars_kept"]
    assert rules["pii_keeps_other_text_independent_corpus"]["status"] == "passed"
    recall_rule = rules["pii_recall_independent_corpus"]
    assert (
        recall_rule["severity"] == "blocking"
        and recall_rule["status"] == "passed"
        and bench["direct_identifier_recall"] >= 0.95
    ), recall_rule
    # the PII report shows the same policy's figures on both corpora
    pii = json.loads((project / "reports/pii_report.json").read_text())
    assert (
        pii["independent_corpus"]["measured"]
        and pii["independent_corpus"]["direct_identifier_recall"] == bench["direct_identifier_recall"]
    )
    assert (
        pii["independent_corpus"]["entities"]["PERSON"] == bench["entities"]["PERSON"]
        and pii["entities"]["PERSON"]["recall"] is not None
    )
    report = json.loads((project / "reports/compliance_report.json").read_text())
    side = report["datasheet"]["pii"]["independent_corpus"]
    assert (
        side["direct_identifier_recall"] == bench["direct_identifier_recall"]
        and side["corpus"]["sha256"] == bench["corpus"]["sha256"]
    )
    assert (
        "PII recall on our data and on a corpus we did not write"
        in (project / "reports/compliance_report.html").read_text()
    )
    # counts only: no labelled value of the corpus reaches the stage's report or the compliance report
    values = {s["value"] for line in (project / "data/eval/pii_benchmark.jsonl").read_text().splitlines() for s in json.loads(line)["spans"]
              if s["entity_type"] in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD") and len(s["value"]) >= 8}  # fmt: skip
    for name in (
        "reports/pii_benchmark.json",
        "reports/pii_report.json",
        "reports/compliance_report.json",
        "reports/compliance_report.html",
    ):
        text = (project / name).read_text()
        assert not [v for v in values if v in text], name
    # fail closed: without its corpus the stage stops, names the file, and leaves no stale report
    (project / "data/eval/pii_benchmark.jsonl").unlink()
    proc = run_cmd(["python", "-m", "pipeline.pii_benchmark"], cwd=project)
    assert (
        proc.returncode == 2
        and "data/eval/pii_benchmark.jsonl" in proc.stderr
        and "no PII benchmark corpus" in proc.stderr
    ), proc.stderr[-2000:]
    assert not (project / "reports/pii_benchmark.json").exists()
