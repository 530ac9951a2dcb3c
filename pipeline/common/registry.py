"""The MLflow model registry, as the gate and the CLI use it.

A candidate is the MLflow *logged model* the finetune run wrote (``govtune.logged_model_id`` on
that run). Registering the same logged model again reuses its version, so re-judging a
candidate after a policy edit updates the same version's tags instead of adding versions.
Only :func:`pipeline.gate.main` moves aliases.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.params import TrackingParams
from pipeline.common.tracking import TAG

log = logging.getLogger(__name__)
WEIGHTS_TAG = f"{TAG}weights_sha256"  # a version's identity: the sha256 of its adapter weights


def training_run_id(train_metrics: Path) -> str | None:
    """The MLflow run id of the finetune run that wrote the adapter (from its metrics file: the
    adapter's own provenance names only what made the weights, so the same weights hash the same)."""
    if not Path(train_metrics).is_file():
        return None
    return (json.loads(Path(train_metrics).read_text()).get("run") or {}).get("mlflow_run_id")


def logged_model_id(train_metrics: Path) -> str | None:
    """The MLflow logged model of the finetune run that wrote the adapter, if tracked."""
    run_id = training_run_id(train_metrics)
    if not run_id:
        return None
    import mlflow

    try:
        return mlflow.MlflowClient().get_run(run_id).data.tags.get(f"{TAG}logged_model_id")
    except Exception:  # noqa: BLE001 - another tracking store: the link is optional
        return None


class Registry:
    """One registered model (name from params) in the current tracking store."""

    def __init__(self, name: str) -> None:
        import mlflow

        self.name = name
        self.client = mlflow.MlflowClient()

    def version_by_alias(self, alias: str) -> Any | None:
        """The version holding ``alias``, or None (no such model or alias)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def get_version(self, version: str) -> Any:
        """A version by number.

        Raises:
            GovtuneError: no such version.
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            raise GovtuneError(f"registry {self.name}", f"version {version} does not exist",
                               "list versions in the MLflow UI (Models tab) or with `govtune lineage`") from exc  # fmt: skip

    def register(self, model_id: str, weights_sha256: str | None = None) -> str:
        """The version of these weights: the version already tagged with their sha256 (a retrain
        that produced the same bytes, or a re-judge), else the version of this logged model, else a
        new registration (tagged with the weights' sha256)."""
        import mlflow

        uri = f"models:/{model_id}"
        versions = self.client.search_model_versions(f"name='{self.name}'")
        for mv in sorted(versions, key=lambda v: int(v.version)):
            if weights_sha256 and mv.tags.get(WEIGHTS_TAG) == weights_sha256:
                return str(mv.version)
        for mv in versions:
            # A sqlite store leaves model_id empty on versions; the source names the logged model.
            if getattr(mv, "model_id", None) == model_id or mv.source == uri:
                return str(mv.version)
        version = str(mlflow.register_model(uri, self.name).version)
        if weights_sha256:
            self.set_tags(version, {WEIGHTS_TAG: weights_sha256})
        return version

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, str(value)[:5000])

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    def delete_alias(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.name, alias)

    def set_description(self, version: str, text: str) -> None:
        self.client.update_model_version(self.name, version, description=text)


def open_registry(cfg: TrackingParams) -> Registry | None:
    """The registry of ``cfg.registered_model``; None when tracking is disabled."""
    if not cfg.enabled:
        return None
    from pipeline.common.tracking import setup_mlflow

    setup_mlflow(cfg)
    return Registry(cfg.registered_model)
