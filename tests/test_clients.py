"""Real clients on a real run: the MLflow UI in headless Chromium, the DVC commands users type,
and a remote MLflow tracking server (plain; and the production layout: PostgreSQL as the backend
store, artifacts in their own folder, MLflow's basic-auth app)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.report import STAGES
from tests.conftest import REPO, VENV_BIN, make_tiny_project, read_json, run_cmd, subprocess_env
from tests.test_gate import _test_policy

SCREENSHOTS = REPO / "reports" / "screenshots"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_built) -> Path:
    """A tiny project after one full `dvc repro` (local sqlite store): a copy of the shared build,
    shared by this module's tests (the xdist group keeps them on one worker)."""
    return tiny_built.clone(tmp_path_factory.mktemp("clients") / "p")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def mlflow_server(cwd: Path, backend: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Runs `mlflow server` on 127.0.0.1 (artifacts served by the server); yields its URL."""
    port = free_port()
    log = (cwd / f"mlflow-server-{port}.log").open("w")
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(cwd / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=subprocess_env() | (env or {}), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                if http_status(f"{url}/health") in (200, 401):
                    break
            assert proc.poll() is None, (cwd / f"mlflow-server-{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def postgres_binary(name: str) -> str:
    """A PostgreSQL server program from Debian's package (``make test`` installs it)."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    found = shutil.which(name)
    assert found, f"PostgreSQL's {name} not found: `make test` installs Debian's postgresql (scripts/apt-install.sh)"
    return found


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A throw-away PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a loopback port, password auth
    (scram-sha-256) for its one role; yields a SQLAlchemy URI per database. As root, the server
    runs as Debian's ``postgres`` user: PostgreSQL refuses to run as root. Stopped and removed after."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="govtune-pg-"))  # not under pytest's 0700 tmp: the server user must reach it
    password, port = secrets.token_urlsafe(16), free_port()
    (base / "pwfile").write_text(password + "\n")
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_server:
        shutil.chown(base, "postgres")
        shutil.chown(base / "pwfile", "postgres")
    data = base / "data"
    subprocess.run([*as_server, postgres_binary("initdb"), "-D", str(data), "-U", "govtune", "--pwfile", str(base / "pwfile"),
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], check=True, capture_output=True)  # fmt: skip
    pg_ctl = [*as_server, postgres_binary("pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-l", str(base / "server.log"), "-w", "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {base}", "start"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        env = {**os.environ, "PGPASSWORD": password}
        for db in databases:
            subprocess.run([postgres_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "govtune", db],
                           check=True, capture_output=True, env=env)  # fmt: skip
        yield {db: f"postgresql://govtune:{password}@127.0.0.1:{port}/{db}" for db in databases}
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server with MLflow's two databases (tracking and registry; the auth app's users)."""
    with postgres_server(("mlflow", "mlflow_auth")) as databases:
        yield databases


def chromium_page(playwright, viewport=(1400, 1000)):
    browser = playwright.chromium.launch(
        executable_path=shutil.which("chromium") or "/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"],
    )  # fmt: skip
    return browser, browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.xdist_group("clients_built")
def test_mlflow_ui_from_version_to_training_run(built, tmp_path):
    """The auditor's path in the real MLflow UI: registered version -> training run -> datasets, report."""
    from playwright.sync_api import sync_playwright

    decision = read_json(built / "reports" / "gate_decision.json")
    version = decision["registry"]["version"]
    name = decision["registry"]["registered_model"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with mlflow_server(built, "sqlite:///mlflow.db") as url, sync_playwright() as pw:
        browser, page = chromium_page(pw)
        try:
            page.goto(f"{url}/#/models/{name}/versions/{version}")
            page.get_by_text("govtune.decision").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert (
                decision["decision"] in body and "govtune.evidence_hash" in body and "govtune.compliance_report" in body
            )
            page.screenshot(path=str(SCREENSHOTS / "mlflow_model_version.png"), full_page=True)
            # The version's source run is the training run: follow the link the UI shows.
            page.get_by_role("link", name=re.compile(r"^finetune")).first.click()
            page.get_by_text("Datasets", exact=False).first.wait_for(timeout=60_000)
            # The run page lists its datasets with their digests (= DVC md5 of the split file).
            page.get_by_text(re.compile(r"train \([0-9a-f]{32}\)")).first.wait_for(timeout=60_000)
            assert "/runs/" in page.url and decision["registry"]["logged_model_id"] not in page.url
            assert "Finished" in page.inner_text("body")
            page.screenshot(path=str(SCREENSHOTS / "mlflow_training_run.png"), full_page=True)
            page.goto(page.url.split("?")[0].rstrip("/") + "/artifacts/compliance/compliance_report.html")
            # The report, logged on the training run by the report stage, renders in the artifact viewer.
            report = page.frame_locator("iframe").first
            report.get_by_role("heading", name=re.compile("Compliance report")).first.wait_for(timeout=60_000)
            assert report.get_by_text(decision["summary"]).first.is_visible()
            page.screenshot(path=str(SCREENSHOTS / "mlflow_training_run_report.png"), full_page=True)
            body = page.inner_text("body")
            assert "compliance_report.pdf" in body and "MODEL_CARD.md" in body
        finally:
            browser.close()
    for shot in ("mlflow_model_version", "mlflow_training_run", "mlflow_training_run_report"):
        assert (SCREENSHOTS / f"{shot}.png").stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.xdist_group("clients_built")
def test_dvc_commands_users_type(built):
    dag = run_cmd(["dvc", "dag"], cwd=built, check=True).stdout
    for stage in ("base_model", "validate", "scrub", "split", "finetune", "evaluate", "gate", "report"):
        assert stage in dag
    metrics = json.loads(run_cmd(["dvc", "metrics", "show", "--json"], cwd=built, check=True).stdout)
    shown = json.dumps(metrics)
    assert "val_loss_final" in shown and "category_accuracy" in shown
    plots = run_cmd(["dvc", "plots", "show", "--json"], cwd=built, check=True).stdout
    assert "train_loss.csv" in plots
    diff = run_cmd(["dvc", "params", "diff", "--all"], cwd=built, check=True).stdout
    assert "finetune.lora_r" in diff
    # An experiment with one knob changed: finetune and what follows re-run, upstream does not.
    exp = run_cmd(
        ["dvc", "exp", "run", "-S", "finetune.lora_r=4", "--name", "rank4"], cwd=built, check=True, timeout=1200
    )
    ran = set(re.findall(r"Running stage '(\w+)'", exp.stdout))
    assert "finetune" in ran and not ran & {"base_model", "validate", "scrub", "split"}, ran
    shown = run_cmd(["dvc", "exp", "show", "--json"], cwd=built, check=True).stdout
    assert "rank4" in shown
    assert json.loads((built / "models" / "adapter" / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.slow
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_remote_tracking_server_by_uri_only(tmp_path, tiny_model, monkeypatch):
    """`MLFLOW_TRACKING_URI` alone sends every stage's run (and its datasets) to a server."""
    import mlflow

    project = make_tiny_project(tmp_path / "p", tiny_model)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(server_dir, f"sqlite:///{server_dir / 'store.db'}") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        run_cmd(["dvc", "repro", "split"], cwd=project, check=True, env=subprocess_env() | {"MLFLOW_TRACKING_URI": url})
        client = mlflow.MlflowClient(url)
        experiment = client.get_experiment_by_name("govtune")
        runs = client.search_runs([experiment.experiment_id])
        stages = {r.data.tags.get("govtune.stage") for r in runs}
        assert {"validate", "scrub", "split"} <= stages, stages
        split_run = next(r for r in runs if r.data.tags.get("govtune.stage") == "split")
        assert {d.dataset.name for d in split_run.inputs.dataset_inputs} == {"train", "val", "test"}
    assert not (project / "mlflow.db").exists(), "the local store was used"


@pytest.mark.scale
@pytest.mark.slow
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_gate_against_an_auth_server_uses_credentials_from_the_environment(tmp_path, tiny_model, postgres, monkeypatch):
    """The production layout (docs/deploy.md): MLflow on PostgreSQL (runs, registry and the auth
    app's users), artifacts in a folder of the server's, basic auth. The full `dvc repro` lands
    there (every stage's run, the datasets, the logged model, the version and its alias); the
    pipeline authenticates with env credentials (none in the repo); a user with READ on the
    registered model cannot move its alias."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    project = make_tiny_project(tmp_path / "p", tiny_model)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    admin_password, gate_password, viewer_password = (secrets.token_urlsafe(16) for _ in range(3))
    databases = postgres
    (server_dir / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {databases['mlflow_auth']}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(server_dir / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # fmt: skip
    with mlflow_server(server_dir, databases["mlflow"], "--app-name", "basic-auth", env=env) as url:
        assert http_status(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") == 401
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        users = AuthServiceClient(url)
        users.create_user("govtune-gate", gate_password)
        users.create_user("analyst", viewer_password)

        # Without credentials a stage fails with the server's answer, not a traceback.
        bare = {k: v for k, v in subprocess_env().items() if not k.startswith("MLFLOW_TRACKING_")} | {
            "MLFLOW_TRACKING_URI": url
        }
        denied = run_cmd(["python", "-m", "pipeline.validate"], cwd=project, env=bare)
        assert denied.returncode != 0 and "401" in denied.stderr + denied.stdout, denied.stderr[-3000:]
        assert "Traceback" not in denied.stderr, denied.stderr[-3000:]

        # The pipeline as its service user (it creates the experiment and the registered model,
        # so it holds MANAGE on them): credentials from the environment only.
        creds = bare | {"MLFLOW_TRACKING_USERNAME": "govtune-gate", "MLFLOW_TRACKING_PASSWORD": gate_password}
        _test_policy(project, [])  # rules the tiny model can pass: the alias moves
        run_cmd(["dvc", "repro"], cwd=project, check=True, env=creds, timeout=1500)
        decision = read_json(project / "reports" / "gate_decision.json")
        name, version = decision["registry"]["registered_model"], decision["registry"]["version"]
        client = mlflow.MlflowClient(url)
        tags = client.get_model_version(name, version).tags
        assert tags["govtune.decision"] == decision["decision"] == "APPROVED" and tags["govtune.evidence_hash"]
        assert client.get_model_version_by_alias(name, "champion").version == version
        # Every stage's run, with its datasets, is in PostgreSQL; the logged model and every
        # artifact are in the server's artifact folder, none in the project.
        runs = client.search_runs([client.get_experiment_by_name("govtune").experiment_id], max_results=200)
        by_stage = {r.data.tags.get("govtune.stage"): r for r in runs}
        assert set(STAGES) - {"monitor"} <= set(by_stage), sorted(by_stage)
        assert {d.dataset.name for d in by_stage["split"].inputs.dataset_inputs} == {"train", "val", "test"}
        assert client.get_logged_model(decision["registry"]["logged_model_id"]).model_id
        assert any((server_dir / "server-artifacts").rglob("MLmodel")) and not (project / "mlartifacts").exists()
        assert not (project / "mlflow.db").exists(), "the local store was used"

        # Anyone else reads (default READ) but cannot move the alias: 403.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "analyst")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", viewer_password)
        analyst = mlflow.MlflowClient(url)
        assert analyst.get_model_version(name, version).tags["govtune.decision"]
        with pytest.raises(MlflowException, match="Permission denied|PERMISSION_DENIED|403"):
            analyst.set_registered_model_alias(name, "champion", version)

    # No credential was written anywhere in the project.
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            data = path.read_bytes()
            assert admin_password.encode() not in data and gate_password.encode() not in data, path
