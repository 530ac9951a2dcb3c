"""Beyond one checkout: a DVC remote that another clone pulls from and an auditor verifies in,
and an erasure request that reaches the remote too.

One tiny-profile build (shared), copied; `dvc push` to a local-path remote (the same DVC code
path as s3/gs/azure remotes), `git clone` + `dvc pull` elsewhere, then `govtune verify` there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.common import scrubbing
from pipeline.common.erasure import pseudonym_of
from pipeline.common.keys import DEMO_KEY, PseudonymKey
from pipeline.forget import subject_hash
from tests.conftest import run_cmd, subprocess_env

KEY = PseudonymKey(DEMO_KEY, "demo")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def cached_outs(project: Path) -> list[str]:
    """Every output DVC caches (what `dvc push` uploads), as DVC's own index lists them."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return sorted(str(Path(o.fs_path).relative_to(project)) for o in repo.index.outs if o.use_cache)


def tree_digests(root: Path, rel: str) -> dict[str, str]:
    """sha256 of every file under ``root/rel`` (a file or a folder), by relative path."""
    base = root / rel
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def remote_objects(remote: Path) -> list[Path]:
    return [p for p in remote.rglob("*") if p.is_file()]


@pytest.mark.scale
@pytest.mark.slow
def test_push_pull_verify_and_erasure_on_the_remote(tmp_path, tiny_built):
    import mlflow

    project = tiny_built.clone(tmp_path / "project")
    remote = tmp_path / "remote"
    run_cmd(["dvc", "remote", "add", "-d", "store", str(remote)], cwd=project, check=True)
    # What a team commits after a run: dvc.lock, the audit log, the remote's config.
    subprocess.run([*GIT, "add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-qm", "run"], cwd=project, check=True, capture_output=True)
    pushed = run_cmd(["dvc", "push"], cwd=project, check=True)
    outs = cached_outs(project)
    assert outs and remote_objects(remote), pushed.stdout

    # A fresh clone pulls every output back, byte for byte.
    pulled = tmp_path / "pulled"
    subprocess.run(["git", "clone", "-q", str(project), str(pulled)], check=True, capture_output=True)
    assert not (pulled / "models" / "adapter").exists()
    run_cmd(["dvc", "pull"], cwd=pulled, check=True)
    for out in outs:
        assert tree_digests(pulled, out) == tree_digests(project, out), out

    # The auditor's clone: the decision and the manifest (not DVC-cached: they are chained in the
    # audit log) come from the tracking server, as the registered version's tags link them.
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    decision = json.loads((project / "reports" / "gate_decision.json").read_text())
    tags = client.get_model_version(decision["registry"]["registered_model"], decision["registry"]["version"]).tags
    for run_tag, artifact in (
        ("govtune.gate_run_id", "gate_decision.json"),
        ("govtune.report_run_id", "evidence_manifest.json"),
    ):
        got = mlflow.artifacts.download_artifacts(
            run_id=tags[run_tag],
            artifact_path=f"reports/{artifact}",
            dst_path=str(tmp_path / "fetched"),
            tracking_uri=store,
        )
        shutil.copy2(got, pulled / "reports" / artifact)
    # Now DVC sees every stage up to date but for the fine-tune's resume checkpoint (never shared).
    status = json.loads(run_cmd(["dvc", "status", "--json"], cwd=pulled, check=True).stdout)
    assert status == {"finetune": [{"changed outs": {"models/checkpoints/finetune": "deleted"}}]}, status
    env = subprocess_env() | {"MLFLOW_TRACKING_URI": store}
    verified = run_cmd(["govtune", "verify"], cwd=pulled, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # An erasure request reaches the remote: no object there holds the subject afterwards; a
    # remote it cannot reach is named, with what to do.
    train_ids = {json.loads(r)["customer_id"] for r in (project / "data/splits/train.jsonl").read_text().splitlines()}
    raw = [json.loads(r) for r in (project / "data/raw/tickets.jsonl").read_text().splitlines()]
    subject = next(
        r["customer_id"] for r in raw if scrubbing.scrub_identifier(KEY, "customer_id", r["customer_id"]) in train_ids
    )
    pseudo = pseudonym_of("customer_id", subject_hash(KEY, "customer_id", subject)).encode()
    holding = [p for p in remote_objects(remote) if pseudo in p.read_bytes()]
    assert holding, "the pushed split should hold the subject's pseudonym"
    run_cmd(["dvc", "remote", "add", "elsewhere", "s3://govtune-test-bucket/dvc"], cwd=project, check=True)
    out = run_cmd(["govtune", "forget", "--customer-id", subject, "--requested-by", "DPO desk", "--reason", "DSR-9"],
                  cwd=project, check=True)  # fmt: skip
    assert f"DVC remote store: {len(holding)} object(s) holding the subject deleted" in out.stdout, out.stdout
    assert "DVC remote 'elsewhere' could not be purged" in out.stdout and "run this request again" in out.stdout
    assert subject not in out.stdout + out.stderr
    left = [
        p for p in remote_objects(remote) if pseudo in p.read_bytes() or json.dumps(subject).encode() in p.read_bytes()
    ]
    assert not left and remote_objects(remote), left
    entry = json.loads((project / "audit" / "audit_log.jsonl").read_text().splitlines()[-1])
    assert entry["remote_objects_deleted"] == {"store": len(holding)} and set(entry["remotes_not_purged"]) == {
        "elsewhere"
    }
