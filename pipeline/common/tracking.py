"""MLflow lineage for every stage: one run per stage execution, linked by an execution id.

Each stage wraps its work in :func:`stage_run`. The run is named after the stage and tagged
with the git commit (and dirty flag), the DVC md5 of the stage's deps and outs, and an
execution id shared by all stages of one ``dvc repro`` (filter on ``tags.govtune.execution_id``
in the UI). Datasets are logged as MLflow datasets whose digest is the DVC md5 of the file,
so a run's inputs can be matched to ``dvc.lock``.

Tracking goes to ``params.yaml`` ``tracking.uri`` (default a local SQLite store) unless
``MLFLOW_TRACKING_URI`` is set. Tracking settings are not DVC params of the stages on purpose:
where lineage is recorded does not change what a stage computes. With ``tracking.enabled:
false`` a :class:`NullRun` with the same methods records nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import GovtuneError
from pipeline.common.params import ComputeParams, TrackingParams

if TYPE_CHECKING:
    from pipeline.common.compute import Meter

log = logging.getLogger(__name__)

TAG = "govtune."  # prefix of our tags


# --- hashing, the way DVC does it ------------------------------------------------------------


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC records in ``dvc.lock`` for a file, or ``<md5>.dir`` for a directory."""
    path = Path(path)
    if not path.is_dir():
        return _md5_file(path)
    entries = [
        {"md5": _md5_file(p), "relpath": p.relative_to(path).as_posix()} for p in sorted(path.rglob("*")) if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


# --- identity of the code and of the execution ---------------------------------------------


def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """``(commit, dirty)`` of the working tree; ``("unknown", True)`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def _proc_stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after the command name


def execution_id() -> str:
    """An id shared by the stages of one ``dvc repro`` / ``dvc exp run``.

    ``$GOVTUNE_EXECUTION_ID`` if set; else derived from the ancestor ``dvc`` process (its
    pid and start time), so every stage DVC starts in one invocation gets the same id;
    else a fresh id (a stage run by hand).
    """
    if os.environ.get("GOVTUNE_EXECUTION_ID"):
        return os.environ["GOVTUNE_EXECUTION_ID"]
    try:
        pid = os.getppid()
        for _ in range(5):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
            if any(Path(a.decode(errors="replace")).name == "dvc" for a in argv):
                start = _proc_stat(pid)[19]  # field 22 of /proc/PID/stat: start time
                return hashlib.sha256(f"{socket.gethostname()}:{pid}:{start}".encode()).hexdigest()[:16]
            pid = int(_proc_stat(pid)[1])  # field 4: parent pid
            if pid <= 1:
                break
    except (OSError, ValueError, IndexError):
        pass
    return uuid.uuid4().hex[:16]


# --- runs ------------------------------------------------------------------------------------


class NullRun:
    """Records nothing; same methods as :class:`StageRun` (tracking disabled)."""

    run_id: str | None = None
    meter: Meter | None = None  # the stage's compute ledger, when the stage measures itself

    def count_tokens(self, n: int) -> None:
        """Adds ``n`` tokens to what the stage ran through the model (its compute ledger)."""
        if self.meter is not None:
            self.meter.count_tokens(n)

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None
    ) -> None: ...
    def log_dataset(self, name: str, path: Path, frame: Any, context: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class StageRun(NullRun):
    """An active MLflow run of one stage."""

    def __init__(self, mlflow: Any, run_id: str, commit: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id
        self._commit = commit

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Logs metrics; with ``model_id`` they are also linked to that logged model."""
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if model_id:
            self._mlflow.log_metrics(values, step=step, model_id=model_id)
        else:
            self._mlflow.log_metrics(values, step=step)

    def log_dataset(self, name: str, path: Path, frame: Any, context: str) -> None:
        """Logs a dataset input whose digest is the DVC md5 of ``path`` (schema from ``frame``)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = self._mlflow.data.from_pandas(frame, source=str(path), name=name, digest=dvc_md5(path))
        self._mlflow.log_input(dataset, context=context, tags={"path": str(path), "git_commit": self._commit})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))


def setup_mlflow(cfg: TrackingParams) -> Any:
    """Points MLflow at the tracking store and experiment; returns the mlflow module."""
    import warnings

    warnings.filterwarnings("ignore", module="mlflow")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            location = None
            if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
                location = Path(cfg.artifact_location).resolve().as_uri()
            mlflow.create_experiment(cfg.experiment, artifact_location=location)
        mlflow.set_experiment(cfg.experiment)
    except MlflowException as exc:
        raise tracking_error(uri, exc) from exc
    return mlflow


def redact_uri(uri: str) -> str:
    """``uri`` without user:password (``http://user:pw@host`` is legal, and must not reach a log)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))


def tracking_error(uri: str, exc: Exception) -> GovtuneError:
    """A clear error for a tracking server that refuses us (credentials come from the environment)."""
    text = str(exc)
    where = f"tracking server {redact_uri(uri)}"
    if "401" in text:
        return GovtuneError(where, "not authenticated (HTTP 401)",
                            "export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN); "
                            "keep credentials out of params.yaml and the repository")  # fmt: skip
    if "403" in text or "PERMISSION_DENIED" in text:
        return GovtuneError(where, "permission denied (HTTP 403)",
                            f"ask the server's admin for EDIT on experiment and registered model (user {os.environ.get('MLFLOW_TRACKING_USERNAME', '?')})")  # fmt: skip
    return GovtuneError(
        where,
        f"MLflow refused the request: {text.splitlines()[0][:300]}",
        "check MLFLOW_TRACKING_URI and that the server is up",
    )


@contextlib.contextmanager
def stage_run(
    cfg: TrackingParams, stage: str, deps: list[Path], outs: list[Path], compute: ComputeParams | None = None
) -> Iterator[NullRun]:
    """An MLflow run for one stage; tags the md5 of deps now and of outs at the end.

    With ``compute``, the stage is measured (:mod:`pipeline.common.compute`): its ledger goes to
    ``<compute.dir>/<stage>.json`` and its ``compute/*`` metrics to the run, once the block ends
    without an error. The run ends FAILED if the block raises (the exception propagates), and no
    ledger of an earlier run is left behind.
    """
    meter, ledger = None, None
    if compute is not None:
        from pipeline.common.compute import Meter

        ledger = compute.dir / f"{stage}.json"
        ledger.unlink(missing_ok=True)
        meter = Meter(stage, compute.energy, compute.country_iso_code).start()
    if not cfg.enabled:
        run = NullRun()
        run.meter = meter
        yield run
        _record(meter, ledger, run)
        return
    mlflow = setup_mlflow(cfg)
    commit, dirty = git_state()
    tags = {
        f"{TAG}stage": stage,
        f"{TAG}execution_id": execution_id(),
        f"{TAG}git_commit": commit,
        f"{TAG}git_dirty": str(dirty).lower(),
        **{f"{TAG}dep.{p}": dvc_md5(p) for p in deps if Path(p).exists()},
    }
    with mlflow.start_run(run_name=stage, tags=tags) as active:
        run = StageRun(mlflow, active.info.run_id, commit)
        run.meter = meter
        yield run
        _record(meter, ledger, run)
        run.set_tags({f"{TAG}out.{p}": dvc_md5(p) for p in [*outs, *([ledger] if ledger else [])] if Path(p).exists()})
    log.info("MLflow run %s (%s) in %s", active.info.run_id, stage, redact_uri(mlflow.get_tracking_uri()))


def _record(meter: Meter | None, ledger: Path | None, run: NullRun) -> None:
    """Writes the stage's compute ledger and logs its figures as ``compute/*`` metrics."""
    if meter is None or ledger is None:
        return
    from pipeline.common.outputs import save_output

    figures = meter.finish()
    save_output("stage_compute", ledger, figures)
    keys = ("wall_s", "cpu_s", "gpu_s", "peak_rss_mb", "tokens")
    metrics = {f"compute/{k}": figures[k] for k in keys if figures[k] is not None}
    if figures["energy"]["kwh"] is not None:
        metrics["compute/energy_kwh"] = figures["energy"]["kwh"]
    run.log_metrics(metrics)


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """Flattens nested params into ``a.b.c`` keys for ``log_params``."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: obj}
