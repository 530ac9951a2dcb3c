"""Shared fixtures. The whole session is offline: sockets are blocked by pytest-socket
(``--disable-socket`` in pyproject.toml) and subprocesses get ``tests/netblock`` on PYTHONPATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.common.offline import configure_offline

REPO = Path(__file__).resolve().parents[1]
NETBLOCK = REPO / "tests" / "netblock"
VENV_BIN = Path(sys.executable).parent

configure_offline()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def subprocess_env() -> dict[str, str]:
    """Environment for stages run as subprocesses: offline, network blocked, venv first on PATH."""
    env = dict(os.environ)
    # mlflow.set_tracking_uri() in a test exports MLFLOW_TRACKING_URI; stages must use their project's store.
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join([str(NETBLOCK), str(REPO)])
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    return env


def run_cmd(
    args: list[str], cwd: Path, check: bool = False, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs a command offline (in ``env``, default :func:`subprocess_env`); returns it with text output."""
    proc = subprocess.run(
        args, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert "govtune-netblock: blocked" not in proc.stderr, f"network access attempted:\n{proc.stderr[-3000:]}"
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_corpus() -> list[str]:
    """Texts for training the tiny tokenizer: a few hundred synthetic tickets."""
    from pipeline.common.params import load_params
    from pipeline.synthesize import generate

    cfg = load_params(REPO / "params.yaml").synthesize.model_copy(update={"rows": 300})
    tickets, _ = generate(cfg)
    return [t["message"] + "\n" + t["reply"] for t in tickets]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: list[str]) -> tuple[Path, dict[str, str]]:
    """A tiny random Llama model directory and its ``{file: sha256}``."""
    from tests.tiny_model import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    return path, build_tiny_model(path, tiny_corpus)


# Stage outputs: never copied, even when DVC has not git-ignored them yet in this checkout.
# The audit log too: a copy must start its own chain, not continue a local run's.
OUTPUT_PREFIXES = ("models/adapter", "models/base", "models/checkpoints", "reports/", "data/scrubbed/", "data/splits/", "audit/")


def copy_project(dest: Path) -> Path:
    """Copies the project's source files (no .venv, no outputs) into ``dest`` as a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        if rel.startswith(OUTPUT_PREFIXES) and not rel.endswith(".gitignore"):
            continue
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def write_yaml(path: Path, data: object) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


TINY_FINETUNE = {
    "max_steps": 12, "batch_size": 4, "grad_accum": 1, "eval_interval": 4, "eval_max_examples": 8,
    "checkpoint_interval": 4, "warmup_steps": 2, "max_seq_len": 256, "learning_rate": 0.01,
}  # fmt: skip
TINY_EVALUATE = {
    "generate_examples": 4,
    "regurgitation_examples": 4,
    "max_new_tokens": 16,
    "canary_candidates": 20,
    "loss_examples": 16,
}


def make_tiny_project(root, tiny_model, rows=300, finetune=None):
    """A project copy on the tiny profile: tiny model, `rows` tickets, small contract and training."""
    from tests.tiny_model import allowlist_entry

    project = copy_project(root)
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", str(rows)], cwd=project, check=True)
    contract = project / "policies" / "data_contract.yaml"
    contract.write_text(contract.read_text().replace("min_rows: 50", "min_rows: 10"))
    fairness = project / "policies" / "fairness.yaml"  # a ~40-record test split: judge groups of 5+
    fairness.write_text(fairness.read_text().replace("min_group_size: 20", "min_group_size: 5"))
    path, files = tiny_model
    allow = project / "policies" / "models.yaml"
    data = yaml.safe_load(allow.read_text())
    data["models"].append(allowlist_entry("tiny-llama", path, files))
    write_yaml(allow, data)
    promotion = project / "policies" / "promotion.yaml"  # the tiny random model fails the quality floors by design:
    promotion.write_text(
        promotion.read_text().replace("fail_on_reject: true", "fail_on_reject: false")
    )  # record, don't stop
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"]["id"] = "tiny-llama"
    params["finetune"].update(TINY_FINETUNE | (finetune or {}))
    params["evaluate"].update(TINY_EVALUATE)
    write_yaml(project / "params.yaml", params)
    return project


def make_real_project(root, rows, finetune, evaluate=None, bias=None, min_group_size=10):
    """A project copy on the real base model (SmolLM2 from its pinned package) with small data.

    For the tests that need a model that can learn: memorisation and injected bias. Each
    `dvc repro` costs minutes (about 3 s per optimizer step of 4 examples on 2 cores)."""
    project = copy_project(root)
    synth = ["python", "-m", "pipeline.synthesize", "--rows", str(rows)]
    if bias is not None:  # (strength, levels) of synthesize.label_bias
        synth += ["--bias-strength", str(bias[0]), "--bias-levels", str(bias[1])]
    run_cmd(synth, cwd=project, check=True)
    contract = project / "policies" / "data_contract.yaml"
    contract.write_text(contract.read_text().replace("min_rows: 50", "min_rows: 5"))
    fairness = project / "policies" / "fairness.yaml"
    fairness.write_text(fairness.read_text().replace("min_group_size: 20", f"min_group_size: {min_group_size}"))
    promotion = project / "policies" / "promotion.yaml"  # record the decision, don't stop the run
    promotion.write_text(promotion.read_text().replace("fail_on_reject: true", "fail_on_reject: false"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"].update(finetune)
    params["evaluate"].update(evaluate or {})
    write_yaml(project / "params.yaml", params)
    return project
