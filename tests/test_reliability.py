"""Crashes lose nothing: outputs are written atomically, a killed writer's leftovers are cleaned
up, and a killed `dvc repro` followed by a new one completes with the same outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.common.io import atomic_path, remove_stale_temporaries, save_text, sha256_file
from tests.conftest import copy_project, run_cmd, subprocess_env

SCRUBBED = Path("data/scrubbed/tickets.jsonl")


def test_exception_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "out.json"
    save_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize(
    "outcome,kept",
    [("succeeds", True), ("fails", False), ("fails after keep()", True), ("exits", False)],
)
def test_a_failed_stage_leaves_no_evidence_of_an_earlier_run(tmp_path, outcome, kept):
    from pipeline.common.io import evidence_of_this_run

    report, html = tmp_path / "report.json", tmp_path / "report.html"
    for path in (report, html):
        path.write_text("an earlier run's passed evidence")
    try:
        with evidence_of_this_run(report, html, tmp_path / "never_written.json") as evidence:
            if outcome == "fails after keep()":
                evidence.keep()
            if outcome.startswith("fails"):
                raise RuntimeError("bad input")
            if outcome == "exits":
                raise SystemExit(2)
    except (RuntimeError, SystemExit):
        pass
    assert report.exists() is kept and html.exists() is kept


def test_stale_temporaries_of_a_dead_writer_are_removed(tmp_path):
    target = tmp_path / "out.jsonl"
    save_text(target, "complete")
    half = tmp_path / ".out.jsonl.abc123.tmp"
    half.write_text("half")
    other = tmp_path / ".other.jsonl.abc123.tmp"  # another output's temporary: not ours to remove
    other.write_text("x")
    assert remove_stale_temporaries(target) == [half]
    assert not half.exists() and other.exists() and target.read_text() == "complete"


def test_directory_moved_aside_is_restored_when_the_writer_died_mid_swap(tmp_path):
    """Killed between the two renames of a directory output: the previous one comes back."""
    target = tmp_path / "adapter"
    old = tmp_path / ".adapter.old"
    old.mkdir()
    (old / "weights").write_text("previous")
    remove_stale_temporaries(target)
    assert (target / "weights").read_text() == "previous" and not old.exists()


def _lock_md5(project: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready: callable, timeout: float = 300) -> None:
    """SIGKILLs the whole process group (stage, workers, dvc) once ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed:\n{proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "never reached the point to kill at"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_stage_and_killed_repro_lose_nothing(tmp_path):
    project = copy_project(tmp_path / "p")
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "300"], cwd=project, check=True)
    contract = project / "policies" / "data_contract.yaml"
    contract.write_text(contract.read_text().replace("min_rows: 50", "min_rows: 10"))
    run_cmd(["dvc", "repro", "split"], cwd=project, check=True)
    reference = _lock_md5(project, "scrub") | _lock_md5(project, "split")
    before = sha256_file(project / SCRUBBED)

    def half_written() -> bool:
        return any(p.stat().st_size > 0 for p in (project / SCRUBBED.parent).glob(".tickets.jsonl.*.tmp"))

    # 1. The stage itself, killed while it writes: the previous output is untouched.
    _kill_when(_start(["python", "-m", "pipeline.scrub"], project), half_written)
    assert sha256_file(project / SCRUBBED) == before
    assert half_written()  # the dead writer's temporary is still there ...
    # 2. `dvc repro` killed in the same place (DVC has removed the stage's outs by then) ...
    _kill_when(_start(["dvc", "repro", "--force", "split"], project), half_written)
    # ... and a new `dvc repro` completes, with the same outputs and no leftovers.
    run_cmd(["dvc", "repro", "split"], cwd=project, check=True)
    assert _lock_md5(project, "scrub") | _lock_md5(project, "split") == reference
    assert sha256_file(project / SCRUBBED) == before
    status = run_cmd(["dvc", "status", "split"], cwd=project, check=True)
    assert "up to date" in status.stdout, status.stdout
    # DVC restored scrub from its run cache without running it, so the dead writer's temporary
    # is still there (in .dvcignore: never part of an output) until the output is written again.
    assert half_written()
    run_cmd(["dvc", "repro", "--force", "scrub"], cwd=project, check=True)
    assert [p for p in (project / "data").rglob("*") if p.name.endswith((".tmp", ".old"))] == []
    assert sha256_file(project / SCRUBBED) == before


@pytest.mark.parametrize(
    "uri,shown",
    [
        ("http://gate:s3cret@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
        ("https://tok@mlflow.example.org/path", "https://***@mlflow.example.org/path"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_tracking_uri_credentials_never_reach_logs_or_errors(uri, shown):
    from pipeline.common.tracking import redact_uri, tracking_error

    assert redact_uri(uri) == shown
    message = str(tracking_error(uri, RuntimeError("API request failed with error code 401 != 200")))
    assert "s3cret" not in message and "tok@" not in message and "HTTP 401" in message
