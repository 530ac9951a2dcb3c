"""The scrub on Ray Data (``scrub.engine: ray``): the same bytes as the local engine, whether the
stage starts its own Ray or joins a cluster in ``RAY_ADDRESS`` (a head and a second worker node
started here on loopback with ``ray start``, stopped after)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN, copy_project, run_cmd, subprocess_env

RECORDS = 400  # the contract asks for >= 50 tickets per category and priority


def _set_engine(project: Path, engine: str) -> None:
    params = project / "params.yaml"
    text, count = re.subn(r"(?m)^(  engine: )\w+", rf"\g<1>{engine}", params.read_text())
    assert count == 1, "params.yaml: scrub.engine not found"
    params.write_text(text)


def _scrub(project: Path, engine: str, env: dict[str, str] | None = None) -> tuple[bytes, dict]:
    _set_engine(project, engine)
    done = run_cmd([str(VENV_BIN / "python"), "-m", "pipeline.scrub"], cwd=project, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"engine {engine}" in done.stderr, done.stderr[-2000:]
    return (project / "data/scrubbed/tickets.jsonl").read_bytes(), json.loads(
        (project / "reports/pii_report.json").read_text()
    )


@pytest.fixture(scope="module")
def small_project(tmp_path_factory) -> Path:
    """A project copy with the first 400 default tickets (and their labelled spans), validated."""
    project = copy_project(tmp_path_factory.mktemp("ray") / "p")
    raw = project / "data/raw/tickets.jsonl"
    lines = raw.read_text().splitlines()[:RECORDS]
    raw.write_text("\n".join(lines) + "\n")
    ids = {json.loads(line)["ticket_id"] for line in lines}
    sidecar = project / "data/raw/pii_spans.jsonl"
    sidecar.write_text("".join(s + "\n" for s in sidecar.read_text().splitlines() if json.loads(s)["ticket_id"] in ids))
    run_cmd([str(VENV_BIN / "python"), "-m", "pipeline.validate"], cwd=project, check=True)
    return project


def test_the_actors_span_index_returns_each_tickets_spans_in_file_order_and_is_removed(tmp_path, monkeypatch):
    """The Ray actors look their batches' labelled spans up in an SQLite index (their memory does
    not grow with the input) written beside the sidecar, so the raw values stay in its folder."""
    import sqlite3

    from pipeline.common.keys import PseudonymKey
    from pipeline.common.policy import load_pii_policy
    from pipeline.common.scrubbing import RayScrubber, sidecar_index

    sidecar = tmp_path / "raw" / "pii_spans.jsonl"
    sidecar.parent.mkdir()
    rows = [{"ticket_id": t, "field": f, "start": i, "end": i + 3, "entity_type": "PERSON", "value": f"v{i}"}
            for i, (t, f) in enumerate([("T-2", "message"), ("T-1", "reply"), ("T-2", "reply"), ("T-10", "message")])]  # fmt: skip
    sidecar.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    monkeypatch.chdir(tmp_path)  # the stage names the sidecar relative to the project
    with sidecar_index(Path("raw/pii_spans.jsonl")) as index:
        assert Path(index).is_absolute() and Path(index).parent.parent == sidecar.parent  # actors run elsewhere
        policy = load_pii_policy(REPO / "policies/pii.yaml").model_copy(update={"enabled": False})  # no engines
        actor = RayScrubber((policy, PseudonymKey(b"k" * 32, "test"), 8, False), index, 10_000)
        with ThreadPoolExecutor(1) as other:  # Ray Data calls an actor from another thread than its constructor's
            spans = other.submit(actor.spans_of, ["T-1", "T-2", "T-3"]).result()
        assert spans == {"T-1": [rows[1]], "T-2": [rows[0], rows[2]]}
        with pytest.raises(sqlite3.OperationalError):  # read-only: an actor cannot change the truth
            actor.index.execute("DELETE FROM spans")
        actor.index.close()
    assert [p.name for p in sidecar.parent.iterdir()] == ["pii_spans.jsonl"]
    with sidecar_index(tmp_path / "none.jsonl") as index:
        assert index == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.scale
@pytest.mark.slow
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.xdist_group("ray")
def test_ray_engine_writes_the_local_engines_bytes(small_project):
    local_out, local_report = _scrub(small_project, "local")
    assert local_out.count(b"\n") == RECORDS and local_report["records"] == RECORDS

    # RAY_ADDRESS unset: the stage starts a local Ray of its own and shuts it down.
    env = {k: v for k, v in subprocess_env().items() if k != "RAY_ADDRESS"}
    ray_out, ray_report = _scrub(small_project, "ray", env)
    assert ray_out == local_out
    assert ray_report == local_report  # recall, detections, residuals: the same whichever engine ran

    # RAY_ADDRESS set: a cluster of two nodes (head + a worker joining it) on this host.
    ray = str(VENV_BIN / "ray")
    # a short temp dir: Ray's Unix sockets live under it, and a socket path is limited to 107 bytes
    port, temp = _free_port(), Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # Ray's token authentication: every node and every client (the stage) holds the token.
    cluster_env = env | {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    start = [ray, "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        for node in (["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp)],
                     ["--address", f"127.0.0.1:{port}", "--num-cpus", "1"]):  # fmt: skip
            started = subprocess.run([*start, *node], capture_output=True, text=True, env=cluster_env, timeout=300)
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
        for _ in range(60):  # the second node registers with the head shortly after `ray start` returns
            status = subprocess.run(
                [ray, "status", "--address", f"127.0.0.1:{port}"], capture_output=True, text=True, env=cluster_env
            )
            if status.stdout.count(" node_") >= 2:
                break
            time.sleep(1)
        assert status.stdout.count(" node_") >= 2, status.stdout + status.stderr
        cluster_out, cluster_report = _scrub(small_project, "ray", cluster_env | {"RAY_ADDRESS": f"127.0.0.1:{port}"})
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=cluster_env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert cluster_out == local_out and cluster_report == local_report
