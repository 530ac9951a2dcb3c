"""Tests of the validate stage: strict reading of bad files, and the GX data contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.common.params import load_params
from pipeline.common.policy import load_data_contract
from pipeline.common.validation import check_file, compile_rule
from pipeline.synthesize import generate
from tests.conftest import REPO, VENV_BIN, copy_project, read_json, run_cmd

CONTRACT = load_data_contract(REPO / "policies" / "data_contract.yaml")
CFG = load_params(REPO / "params.yaml").validate_
SYNTH = load_params(REPO / "params.yaml").synthesize


@pytest.fixture(scope="module")
def good_records() -> list[dict]:
    return generate(SYNTH.model_copy(update={"rows": 400}))[0]


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# Each bad file: how to make it from good records, and what the error must say.
def _bom(p, rs):
    p.write_bytes(b"\xef\xbb\xbf" + write_lines(p, rs).read_bytes())


def _bad_utf8(p, rs):
    lines = write_lines(p, rs).read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"Hi", b"H\xff", 1) if b"Hi" in lines[2] else lines[2][:10] + b"\xff" + lines[2][10:]
    p.write_bytes(b"\n".join(lines))


def _truncated(p, rs):
    text = write_lines(p, rs).read_text()
    lines = text.splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]
    p.write_text("\n".join(lines) + "\n")


def _missing_column(p, rs):
    rs = [dict(r) for r in rs]
    del rs[6]["channel"]
    write_lines(p, rs)


def _wrong_type(p, rs):
    rs = [dict(r) for r in rs]
    rs[7]["priority"] = 3
    write_lines(p, rs)


def _huge(p, rs):
    rs = [dict(r) for r in rs]
    rs[1]["message"] = "x" * 5_000_000
    write_lines(p, rs)


def _nul_byte(p, rs):
    lines = write_lines(p, rs).read_text().splitlines()
    lines[3] = lines[3].replace('"', '"\x00', 4)[:40] + lines[3][40:]
    p.write_text("\n".join(lines) + "\n")


def _control_char(p, rs):
    lines = write_lines(p, rs).read_text().splitlines()
    lines[5] = lines[5].replace(': "', ': "\x01', 1)
    p.write_text("\n".join(lines) + "\n")


def _three_bad_lines(p, rs):
    lines = write_lines(p, rs).read_text().splitlines()
    for i in (2, 5, 8):
        lines[i] = lines[i][: len(lines[i]) // 3]
    p.write_text("\n".join(lines) + "\n")


def _not_object(p, rs):
    write_lines(p, rs)
    with open(p, "a") as f:
        f.write("[1, 2]\n")


BAD_FILES = [
    ("empty", lambda p, rs: p.write_text(""), ":", "file is empty"),
    ("bom", _bom, ":1", "byte-order mark"),
    ("invalid_utf8", _bad_utf8, ":3", "invalid UTF-8"),
    ("truncated_json", _truncated, ":5", "not valid JSON: the line is truncated (the record stops at column"),
    ("nul_byte", _nul_byte, ":4", "not valid JSON: a NUL byte at column"),
    ("control_char", _control_char, ":6", "(Invalid control character at column"),
    ("three_bad_lines", _three_bad_lines, ":3", "truncated (the record stops at column"),
    ("more_bad_lines_counted", _three_bad_lines, ":3", "; 2 more bad line(s) after it"),
    ("missing_column", _missing_column, ":7", "missing column(s): channel"),
    ("wrong_type", _wrong_type, ":8", "column 'priority' should be a string, found an int"),
    ("record_5mb", _huge, ":2", "over the contract's max_record_bytes"),
    ("not_an_object", _not_object, ":11", "not an object"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy whose data/raw the bad-file tests overwrite (tracking off: no MLflow)."""
    import yaml

    from tests.conftest import write_yaml

    root = copy_project(tmp_path_factory.mktemp("bad") / "p")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tracking"]["enabled"] = False
    write_yaml(root / "params.yaml", params)
    return root


@pytest.mark.parametrize("name,make,where,phrase", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_exit_2_naming_file_and_line(project, good_records, monkeypatch, capsys, name, make, where, phrase):
    """The stage's entry point (as DVC runs it) on each bad file: exit code 2, file:line, reason."""
    from pipeline import validate
    from pipeline.common.errors import run_main

    raw = project / "data" / "raw" / "tickets.jsonl"
    make(raw, good_records[:10])
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as exit_info:
        run_main(validate.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"data/raw/tickets.jsonl{where}" in err and phrase in err
    assert "Traceback" not in err
    assert " at at " not in err
    if make is not _three_bad_lines:  # one bad line: nothing more is claimed
        assert "more bad line" not in err


def test_crlf_line_endings_are_read(tmp_path, good_records):
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(write_lines(path, good_records[:50]).read_bytes().replace(b"\n", b"\r\n"))
    result = check_file(CFG, CONTRACT, path)
    assert result.rows == 50


def test_default_data_passes(good_records, tmp_path):
    result = check_file(CFG, CONTRACT, write_lines(tmp_path / "t.jsonl", good_records))
    assert result.blocking_failures == [], [c.rule_id for c in result.blocking_failures]
    assert len(result.checks) >= len(CONTRACT.rules)


def _mutate(records, fn):
    records = [dict(r) for r in records]
    fn(records)
    return records


RULE_FAILURES = [
    ("duplicate ids", lambda rs: rs.append(dict(rs[0])), "ticket_id_unique", 2),
    ("null message", lambda rs: rs[3].update(message=None), "message_present", 1),
    ("label outside set", lambda rs: rs[5].update(category="complaint"), "category_allowed", 1),
    ("bad id format", lambda rs: rs[8].update(ticket_id="T-1"), "ticket_id_format", 1),
    ("overlong", lambda rs: rs[9].update(message="This is my long text. " * 250), "message_length", 1),
    ("bad timestamp", lambda rs: rs[2].update(created_at="yesterday"), "created_at_iso", 1),
    ("unknown gender value", lambda rs: rs[4].update(gender="F"), "gender_allowed", 1),
]


@pytest.mark.parametrize("name,fn,rule,count", RULE_FAILURES, ids=[r[0] for r in RULE_FAILURES])
def test_contract_rules_catch_defects(tmp_path, good_records, name, fn, rule, count):
    records = _mutate(good_records, fn)
    result = check_file(CFG, CONTRACT, write_lines(tmp_path / "t.jsonl", records))
    failed = {c.rule_id: c for c in result.blocking_failures}
    assert set(failed) == {rule}
    assert failed[rule].observed["unexpected_count"] == count
    assert failed[rule].failing_ids


def test_min_rows_per_class_and_coverage(tmp_path, good_records):
    records = _mutate(good_records[:120], lambda rs: [r.update(gender=None) for r in rs[:30]])
    result = check_file(CFG, CONTRACT, write_lines(tmp_path / "t.jsonl", records))
    failed = {c.rule_id for c in result.checks if not c.success}
    assert any(f.startswith("category_min_rows[") for f in failed)
    assert "gender_coverage" in {c.rule_id for c in result.warnings}


@pytest.mark.parametrize("rule", CONTRACT.rules, ids=lambda r: r.id)
def test_every_rule_compiles_to_a_gx_expectation(rule):
    compiled = compile_rule(rule, CONTRACT, rows=1000)
    assert compiled and all(type(e).__module__.startswith("great_expectations") for _, e in compiled)


def test_stage_blocks_and_reports_without_raw_values(tmp_path, good_records):
    """The real stage: a blocking failure exits 2 naming rule, column and count; reports hold ids only."""
    project = copy_project(tmp_path / "p")
    records = _mutate(good_records, lambda rs: (rs.append(dict(rs[1])), rs[3].update(category="complaint")))
    write_lines(project / "data" / "raw" / "tickets.jsonl", records)
    proc = run_cmd([str(VENV_BIN / "python"), "-m", "pipeline.validate"], cwd=project)
    assert proc.returncode == 2
    assert "rule ticket_id_unique (column ticket_id): 2 failing rows" in proc.stderr
    assert "rule category_allowed (column category): 1 failing rows" in proc.stderr
    report = read_json(project / "reports" / "data_validation.json")
    assert report["success"] is False and set(report["blocking_failures"]) == {"ticket_id_unique", "category_allowed"}
    html = (project / "reports" / "data_validation.html").read_text()
    texts = (project / "reports" / "data_validation.json").read_text() + html + proc.stderr + proc.stdout
    for r in records[:50]:
        assert r["message"] not in texts and r["reply"] not in texts and r["customer_id"] not in texts


def test_stage_exits_2_on_a_malformed_line(tmp_path, good_records):
    project = copy_project(tmp_path / "p")
    raw = project / "data" / "raw" / "tickets.jsonl"
    _truncated(raw, good_records[:10])
    proc = run_cmd([str(VENV_BIN / "python"), "-m", "pipeline.validate"], cwd=project)
    assert proc.returncode == 2
    assert "data/raw/tickets.jsonl:5: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
