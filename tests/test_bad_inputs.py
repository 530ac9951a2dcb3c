"""The bad-input corpus (``tests/fixtures/bad/``): each file gets a clear error naming the file
and the line, key or rule, never a traceback, and never a half-written output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, run_cmd, write_yaml

BAD = REPO / "tests" / "fixtures" / "bad"
RAW = "data/raw/tickets.jsonl"

# file, exit code of the validate stage, phrases its stderr must hold
DATA_CASES = [
    ("good.jsonl", 0, []),
    ("crlf.jsonl", 0, []),
    ("empty.jsonl", 2, [f"{RAW}:", "file is empty"]),
    ("bom.jsonl", 2, [f"{RAW}:1", "byte-order mark"]),
    ("invalid_utf8.jsonl", 2, [f"{RAW}:3", "invalid UTF-8"]),
    ("truncated_line.jsonl", 2, [f"{RAW}:5", "not valid JSON"]),
    ("missing_column.jsonl", 2, [f"{RAW}:7", "missing column(s): channel"]),
    ("wrong_type.jsonl", 2, [f"{RAW}:8", "column 'priority' should be a string"]),
    ("record_5mb.jsonl", 2, [f"{RAW}:2", "over the contract's max_record_bytes"]),
    ("duplicate_ids.jsonl", 2, ["rule ticket_id_unique (column ticket_id): 2 failing rows"]),
    ("label_outside_set.jsonl", 2, ["rule category_allowed (column category): 1 failing rows"]),
    ("non_english.jsonl", 2, ["rule message_english (column message): 1 failing rows"]),
]


def corpus_module():
    """tests/fixtures/bad/make_corpus.py, imported by path (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with tracking off and a contract sized for 12-record files."""
    root = copy_project(tmp_path_factory.mktemp("bad-inputs") / "p")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tracking"]["enabled"] = False
    write_yaml(root / "params.yaml", params)
    contract = root / "policies" / "data_contract.yaml"
    contract.write_text(contract.read_text().replace("min_rows: 50", "min_rows: 1"))
    return root


def test_corpus_is_current(tmp_path):
    """The committed files are what make_corpus.py makes (the script documents each one)."""
    work = tmp_path / "repo"
    shutil.copytree(BAD, work / "tests" / "fixtures" / "bad")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    (work / "policies").mkdir()
    shutil.copy(REPO / "policies" / "promotion.yaml", work / "policies" / "promotion.yaml")
    run_cmd(["python", str(work / "tests" / "fixtures" / "bad" / "make_corpus.py")], cwd=work, check=True)
    for path in sorted(BAD.iterdir()):
        if path.suffix in (".jsonl", ".yaml"):
            made = (work / "tests" / "fixtures" / "bad" / path.name).read_bytes()
            assert made == path.read_bytes(), f"{path.name} is stale: run python tests/fixtures/bad/make_corpus.py"


@pytest.mark.parametrize("name,code,phrases", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(project, monkeypatch, capsys, name, code, phrases):
    """The validate stage's entry point (as DVC runs it) on each corpus file."""
    from pipeline import validate
    from pipeline.common.errors import run_main

    if name == "record_5mb.jsonl":  # too large to commit: made here
        corpus_module().record_5mb(project / RAW)
    else:
        shutil.copy(BAD / name, project / RAW)
    report = project / "reports" / "data_validation.json"
    html = report.with_suffix(".html")
    # The "passed" report of an earlier run: a run that cannot read its input must not leave it behind.
    report.parent.mkdir(exist_ok=True)
    report.write_text('{"success": true, "rows": 2000}')
    html.write_text("<p>passed</p>")
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as exit_info:
        run_main(validate.main)
        raise SystemExit(0)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in:\n{err[-2000:]}"
    # A file that cannot be read leaves no report at all; a contract failure leaves a complete one.
    if any(p.startswith(RAW) for p in phrases):
        assert not report.exists() and not html.exists(), "a failed run left the earlier 'passed' report"
    else:
        assert yaml.safe_load(report.read_text())["success"] is (code == 0)


CONFIG_CASES = [
    ("params_unknown_key.yaml", "params.yaml", ["params.yaml", "finetune.lora_rank", "unknown key"]),
    ("params_wrong_type.yaml", "params.yaml", ["params.yaml", "finetune.max_steps", "integer"]),
    ("promotion_typo.yaml", "policies/promotion.yaml", ["promotion.yaml", "treshold", "unknown key"]),
]


@pytest.mark.parametrize("name,target,phrases", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_file(tmp_path, name, target, phrases):
    """A broken params.yaml stops a stage, a broken policy stops lint; both name file, line and key."""
    root = copy_project(tmp_path / "p")
    shutil.copy(BAD / name, root / target)
    key = phrases[1].split(".")[-1]
    bad_line = next(
        i + 1 for i, line in enumerate((BAD / name).read_text().splitlines()) if line.lstrip().startswith(f"{key}:")
    )
    command = ["python", "-m", "pipeline.split"] if target == "params.yaml" else ["govtune", "policy", "lint"]
    proc = run_cmd(command, cwd=root)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for phrase in [*phrases, f"line {bad_line}"]:
        assert phrase in proc.stderr, f"{phrase!r} not in:\n{proc.stderr[-2000:]}"
