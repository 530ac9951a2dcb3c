"""Shared fixtures. The whole session is offline: sockets are blocked by pytest-socket
(``--disable-socket`` in pyproject.toml) and subprocesses get ``tests/netblock`` on PYTHONPATH.

Expensive things are built once per test run and shared, also across pytest-xdist workers
(``make test`` runs two): the tiny model, and a tiny-profile project after one full
``dvc repro`` (300 and 600 tickets). A test never touches a shared build: it works on a
:meth:`Built.clone`, a copy whose MLflow store points at the copy's own artifacts. See
docs/testing.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.common.offline import configure_offline

REPO = Path(__file__).resolve().parents[1]
NETBLOCK = REPO / "tests" / "netblock"
VENV_BIN = Path(sys.executable).parent

configure_offline()


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker's torch (in the test and in the stages it starts) gets its
    share of the cores: two workers with two OpenMP threads each on two cores spin-wait on each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first, so that parallel workers finish together: the real-model tests (minutes
    each), then the other ``slow`` ones, then the rest. Stable within each rank, so a module's
    tests stay together and its module-scoped fixtures are built once per rank."""

    def rank(item: pytest.Item) -> int:
        if item.path.name == "test_real_model.py":
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


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


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run that every xdist worker sees (each worker's basetemp is inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test run, whichever worker asks first; the others wait for it.

    A build that raises leaves no folder behind, so the next worker that asks tries again (and
    reports its own failure)."""
    from filelock import FileLock

    root = shared_tmp(tmp_path_factory) / name
    done = root.with_name(name + ".done")
    with FileLock(str(root.with_name(name + ".lock"))):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            try:
                build(root)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
            done.touch()
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: list[str]) -> tuple[Path, dict[str, str]]:
    """A tiny random Llama model directory and its ``{file: sha256}`` (one per test run)."""
    from benchmarks.tiny_model import build_tiny_model

    def build(path: Path) -> None:
        files = build_tiny_model(path / "model", tiny_corpus)
        (path / "files.json").write_text(json.dumps(files), encoding="utf-8")

    root = build_once(tmp_path_factory, "tiny-llama", build)
    return root / "model", json.loads((root / "files.json").read_text(encoding="utf-8"))


# Stage outputs: never copied, even when DVC has not git-ignored them yet in this checkout.
# The audit log too: a copy must start its own chain, not continue a local run's.
OUTPUT_PREFIXES = (
    "models/adapter",
    "models/base",
    "models/checkpoints",
    "reports/",
    "data/scrubbed/",
    "data/splits/",
    "audit/",
)


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
    "checkpoint_interval": 4, "warmup_steps": 2, "max_seq_len": 256, "learning_rate": 0.01, "max_new_tokens": 16,
    "counterfactual_augmentation": True,  # opt-in in the default params; the tiny profile runs it end to end
}  # fmt: skip
TINY_EVALUATE = {
    "generate_examples": 4,
    "regurgitation_examples": 4,
    "canary_candidates": 20,
    "loss_examples": 16,
}


TEST_BOOTSTRAP_SAMPLES = 50


def small_fairness(text: str, min_group_size: int) -> str:
    """``policies/fairness.yaml`` for a small test project: groups of ``min_group_size`` judged,
    and 50 bootstrap resamples instead of 200. Each resample is one Fairlearn ``MetricFrame``
    (~20 ms of pandas), 7 intervals per model: 200 cost ~30 s per model evaluation. The
    intervals' code is the same at any count; tests/test_evaluate.py checks them against a hand
    loop."""
    for old, new in (("min_group_size: 20", f"min_group_size: {min_group_size}"),
                     ("samples: 200", f"samples: {TEST_BOOTSTRAP_SAMPLES}")):  # fmt: skip
        if old not in text:
            raise AssertionError(f"policies/fairness.yaml no longer holds {old!r}: update tests/conftest.py")
        text = text.replace(old, new)
    return text


def make_tiny_project(root, tiny_model, rows=300, finetune=None):
    """A project copy on the tiny profile: tiny model, `rows` tickets, small contract and training."""
    from benchmarks.tiny_model import allowlist_entry

    project = copy_project(root)
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", str(rows)], cwd=project, check=True)
    contract = project / "policies" / "data_contract.yaml"
    contract.write_text(contract.read_text().replace("min_rows: 50", "min_rows: 10"))
    fairness = project / "policies" / "fairness.yaml"  # a ~40-record test split: judge groups of 5+
    fairness.write_text(small_fairness(fairness.read_text(), min_group_size=5))
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


# --- one full tiny-profile run, shared ---------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A project after one full ``dvc repro``, and what that repro printed. Never modified:
    tests read ``stdout``/``stderr`` and work on :meth:`clone`."""

    project: Path
    stdout: str
    stderr: str

    def clone(self, dest: Path) -> Path:
        return clone_project(self.project, dest)


def clone_project(src: Path, dest: Path) -> Path:
    """Copies a built project (sources, outputs, ``.dvc/cache``, ``mlflow.db``, artifacts, audit
    log, git) to ``dest``, so that ``dvc repro`` there is a no-op and its MLflow store is its own.

    MLflow keeps absolute artifact locations (experiments, runs, logged models, model versions
    in ``mlflow.db``; ``artifact_path`` in each logged model's MLmodel): they are rewritten from
    ``src`` to ``dest``. Anything else that still names ``src`` is an error, so a copy can never
    write into the shared build."""
    shutil.copytree(src, dest, symlinks=True)
    old, new = str(src), str(dest)
    db = dest / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [c[1] for c in con.execute(f"PRAGMA table_info('{table}')")]:
                    con.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old, new, old),
                    )
        con.execute("VACUUM")  # so that no free page keeps the old text
        con.close()
    for meta in (dest / "mlartifacts").rglob("MLmodel"):
        meta.write_text(meta.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    needle = old.encode()
    left = [
        str(p.relative_to(dest))
        for p in dest.rglob("*")
        if p.is_file() and not p.is_symlink() and ".git" not in p.relative_to(dest).parts and needle in p.read_bytes()
    ]
    assert not left, f"the copy of {src} still names it in: {left} (teach clone_project to rewrite them)"
    return dest


def build_project(tmp_path_factory, tiny_model, name: str, rows: int) -> Built:
    """:func:`make_tiny_project` with ``rows`` tickets and one full ``dvc repro``, once per test run."""

    def build(root: Path) -> None:
        project = make_tiny_project(root / "p", tiny_model, rows=rows)
        proc = run_cmd(["dvc", "repro"], cwd=project, check=True)
        (root / "repro.json").write_text(json.dumps({"stdout": proc.stdout, "stderr": proc.stderr}), encoding="utf-8")

    root = build_once(tmp_path_factory, name, build)
    out = json.loads((root / "repro.json").read_text(encoding="utf-8"))
    return Built(root / "p", out["stdout"], out["stderr"])


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory, tiny_model) -> Built:
    """The tiny profile (300 tickets, tiny model, tiny training) after one full ``dvc repro``."""
    return build_project(tmp_path_factory, tiny_model, "tiny-built-300", rows=300)


@pytest.fixture(scope="session")
def tiny_built_600(tmp_path_factory, tiny_model) -> Built:
    """The same with 600 tickets (enough test records per group for the label-bias and monitor tests)."""
    return build_project(tmp_path_factory, tiny_model, "tiny-built-600", rows=600)


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
    fairness.write_text(small_fairness(fairness.read_text(), min_group_size))
    promotion = project / "policies" / "promotion.yaml"  # record the decision, don't stop the run
    promotion.write_text(promotion.read_text().replace("fail_on_reject: true", "fail_on_reject: false"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"].update(finetune)
    params["evaluate"].update(evaluate or {})
    write_yaml(project / "params.yaml", params)
    return project
