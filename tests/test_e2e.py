"""End to end: `dvc repro` on a fresh copy of the project, with the tiny model, offline.

The stages run as DVC runs them (subprocesses, network blocked). Later stages join this
test as they are built; the tiny profile keeps it to seconds per stage.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import copy_project, read_json, run_cmd, write_yaml
from tests.tiny_model import allowlist_entry


@pytest.fixture()
def tiny_project(tmp_path, tiny_model):
    """A copy of the project whose params select the tiny model (added to its allowlist)."""
    project = copy_project(tmp_path / "project")
    path, files = tiny_model
    allow = project / "policies" / "models.yaml"
    data = yaml.safe_load(allow.read_text())
    data["models"].append(allowlist_entry("tiny-llama", path, files))
    write_yaml(allow, data)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"]["id"] = "tiny-llama"
    write_yaml(project / "params.yaml", params)
    return project


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tiny_project):
    first = run_cmd(["dvc", "repro"], cwd=tiny_project, check=True)
    assert "Running stage 'base_model'" in first.stdout
    prov = read_json(tiny_project / "models" / "base" / "provenance.json")
    assert prov["model_id"] == "tiny-llama" and prov["source"]["kind"] == "local_dir"
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    assert lock["stages"]["base_model"]["outs"][0]["path"] == "models/base"

    # Nothing changed: nothing re-runs.
    again = run_cmd(["dvc", "repro"], cwd=tiny_project, check=True)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    # The allowlist's expected hash no longer matches: the stage fails closed, naming file and hashes.
    allow = tiny_project / "policies" / "models.yaml"
    data = yaml.safe_load(allow.read_text())
    data["models"][-1]["files"]["model.safetensors"] = "f" * 64
    write_yaml(allow, data)
    failed = run_cmd(["dvc", "repro"], cwd=tiny_project)
    assert failed.returncode != 0
    assert "sha256 mismatch" in failed.stderr and "model.safetensors" in failed.stderr
    assert "f" * 64 in failed.stderr
