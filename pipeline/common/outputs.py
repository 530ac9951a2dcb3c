"""The typed evidence between stages: one pydantic model per stage output the gate reads.

A stage's JSON output is evidence only when it validates against its model here: the gate and
the report read every output through :func:`read_output` (a malformed file is an error that
names the file and the field, never a value guessed from it), and ``govtune policy lint``
checks every rule's ``source:dotted.path`` against these models' JSON Schemas before any run,
so a typo'd path is caught when the policy is written, not when the gate runs.

The levels a rule can read are typed with every key they hold (``extra="forbid"``); below
them, detail that only the report shows (per-group tables, histograms, definitions) is typed as
plain mappings. Keys that depend on the data (protected attributes, groups, entity types) are
``dict[str, ...]``: a path may use any key there, or ``*`` for all of them.

The schemas are exported to ``policies/schemas/evidence/`` (``govtune policy schema``), and
``tests/test_contracts.py`` fails when they are stale.
"""

from __future__ import annotations

import difflib
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from pipeline.common.errors import GovtuneError


class Outcome(StrEnum):
    """What a rule's comparison gave."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"


class Status(StrEnum):
    """How a rule fared once severity and waivers are applied (what decisions and reports show)."""

    PASSED = "passed"
    FAILED = "failed"
    WAIVED = "waived"
    WARNING = "warning"
    ERROR = "error"
    NOT_APPLICABLE = "not_applicable"


class Decision(StrEnum):
    """What the gate decided."""

    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    PENDING_APPROVAL = "PENDING_APPROVAL"


class Malformed(str):
    """Stands in for an evidence file that did not validate: the reason, for every rule that reads it."""


class Typed(BaseModel):
    """A level of an output whose keys are all known: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid")


Interval = list[float]  # [low, high] of a 95 % interval
Table = dict[str, Any]  # detail for the report, not read by rules


class Metric(Typed):
    """One measured value with its sample size, and its 95 % interval where one is computed."""

    value: float | None
    n: int
    ci95: Interval | None = None
    definition: str | None = None


class NotMeasured(Typed):
    """What a stage writes in place of a measure it could not take, and why."""

    error: str
    group_sizes: dict[str, int] | None = None
    groups: dict[str, Table] | None = None


class FileRef(Typed):
    path: str
    sha256: str


# --- validate ---------------------------------------------------------------------------------


class DataValidation(Typed):
    """``reports/data_validation.json``: the data contract's Great Expectations run."""

    engine: str
    contract: str
    input: FileRef
    rows: int
    success: bool
    expectations_total: int
    expectations_failed: int
    blocking_failures: list[str]  # rule ids
    warnings: list[str]  # rule ids
    checks: list[Table]


# --- scrub and pii_benchmark ------------------------------------------------------------------


class EntityScrub(Typed):
    """One entity type's figures in the scrub report."""

    in_policy: bool
    operator: str | None
    true_spans: int
    detections: int
    detections_by_field: dict[str, int]
    recall: float | None
    char_recall: float | None
    precision: float | None
    leaked_values: int
    residual_detections: int
    score_histogram: list[int]


class ScrubTotals(Typed):
    true_spans: int
    detections: int
    leaked_values: int
    residual_detections: int
    residual_rate: float
    min_recall: float | None


class PiiReport(Typed):
    """``reports/pii_report.json``: what the scrub detected and replaced, against ground truth."""

    enabled: bool
    engine: str
    policy: str
    ner_model: str
    fields: list[str]
    identifier_columns: dict[str, str]
    key: Table
    input: FileRef
    output: FileRef
    records: int
    ground_truth_available: bool
    entities: dict[str, EntityScrub]
    totals: ScrubTotals
    definitions: dict[str, str]
    independent_corpus: Table


class PiiBenchmark(Typed):
    """``reports/pii_benchmark.json``: the same policy on the independent, labelled corpus."""

    corpus: Table
    policy: Table
    direct_identifiers: list[str]
    direct_identifier_recall: float | None
    non_pii_chars_kept: float
    caught_share: float
    entities: dict[str, Table]
    verbatim_leaks: dict[str, int]
    verbatim_leaks_direct: int
    definitions: dict[str, str]
    seconds: float


# --- split and finetune ----------------------------------------------------------------------


class SplitReport(Typed):
    """``reports/split_report.json``: sizes, label mixes, the customer overlap (must be 0)."""

    method: str
    fractions: dict[str, float]
    records: dict[str, int]
    record_share: dict[str, float]
    customers: dict[str, int]
    customer_overlap: int
    category_counts: dict[str, dict[str, int]]
    priority_counts: dict[str, dict[str, int]]
    priority_by_attribute: dict[str, dict[str, dict[str, dict[str, int]]]]
    category_by_attribute: dict[str, dict[str, dict[str, dict[str, int]]]]
    test_attribute_counts: dict[str, dict[str, int]]
    protected_attributes_in_training_text: bool
    canaries: Table


class TrainMetrics(BaseModel):
    """``reports/train_metrics.json`` (``dvc metrics show``): losses, throughput, the run's ids.

    Open: the training summary's own keys (steps, precision, batch sizes) come with it.
    """

    model_config = ConfigDict(extra="allow")

    train_loss_final: float | None
    val_loss_base: float | None
    val_loss_final: float | None
    val_loss_improvement: float | None
    tokens: int
    padding_waste: float | None
    train_seconds: float
    tokens_per_s: float | None
    run: Table = Field(default_factory=dict)


# --- evaluate --------------------------------------------------------------------------------


class Quality(Typed):
    category_accuracy: Metric
    category_macro_f1: Metric
    priority_accuracy: Metric
    answer_loss: Metric
    well_formed_rate: Metric
    reply_rouge_l: Metric


class GroupFairness(Typed):
    """One protected attribute: parity metrics over the groups large enough to judge."""

    groups: dict[str, Table]
    demographic_parity_difference: Metric
    demographic_parity_ratio: Metric
    equalized_odds_difference: Metric
    category_accuracy_difference: Metric
    category_parity_difference: Metric
    category_parity_category: str
    small_groups: list[str]
    parity_over_groups: list[str]


class Counterfactual(Typed):
    """One attribute's counterfactual swaps: how often the answer changes."""

    cf_category_flip_rate: Metric
    cf_priority_flip_rate: Metric
    cf_mean_abs_prob_change: Metric


class NoCounterfactual(Typed):
    n: int
    note: str


class Privacy(Typed):
    canaries: list[Table]
    canary_exposure_max: Metric
    pii_like_output_rate: Metric
    regurgitated_pii_values: Metric


class ModelEvaluation(Typed):
    """One model's figures on the test split (``quality``/``fairness``/``counterfactual``), and
    its privacy probes."""

    quality: Quality
    fairness: dict[str, GroupFairness | NotMeasured]
    counterfactual: dict[str, Counterfactual | NoCounterfactual]
    privacy: Privacy | None = None


class LabelBias(Typed):
    """One attribute's escalation rates and category mix in the training labels."""

    groups: dict[str, Table]
    escalation_gap: Metric
    escalation_gap_lower_bound: Metric
    category_gap: Metric
    category_gap_lower_bound: Metric
    category_gap_category: str | None
    confidence: float
    small_groups: list[str]


class Evaluation(Typed):
    """``reports/evaluation.json``: base and fine-tuned model on the same inputs."""

    definitions: dict[str, str]
    surviving_signals: dict[str, list[str]]
    training_labels: dict[str, LabelBias | NotMeasured]
    base: ModelEvaluation
    finetuned: ModelEvaluation
    precision: str
    generation: dict[str, int]  # how both models answered: the adapter's settings, as the served model answers
    not_testable: dict[str, str]
    inputs: dict[str, str | None]
    seconds: float


# --- the gate's own checks, the provenance files, monitoring ---------------------------------


class Checks(Typed):
    """What the gate re-checks itself (``checks:<name>``): each true or false, with its detail in the decision."""

    base_model_approved: bool
    adapter_built_from_base: bool
    adapter_files_intact: bool
    trained_on_current_split: bool
    no_erased_subject_in_training: bool
    evaluation_of_this_adapter: bool


class Provenance(BaseModel):
    """A ``provenance.json`` (base model or adapter): open, the stage that wrote it owns its keys."""

    model_config = ConfigDict(extra="allow")


class Drift(Typed):
    category: Table | None = None
    priority: Table | None = None
    message_length: Table
    vocabulary: Table
    pii_entity_mix: Table
    embedding: Table


class MonitoredPii(Typed):
    records: int
    min_recall: float | None
    residual_rate: float


class Monitoring(BaseModel):
    """``reports/monitoring/<batch>/monitoring_report.json`` as its rules read it."""

    model_config = ConfigDict(extra="allow")

    batch: str
    records: int
    labelled: bool
    drift: Drift
    pii: MonitoredPii
    champion: ModelEvaluation | Table


# --- the gate's decision -----------------------------------------------------------------------


class JudgedRule(Typed):
    """One rule as the gate judged it (``RuleResult.to_json``)."""

    id: str
    title: str
    description: str
    severity: str
    owner: str
    controls: list[str]
    evidence: str
    comparator: str
    threshold: Any
    baseline: Table | None
    target: Any
    observed: Any
    failing_keys: list[str]
    result: Outcome
    status: Status
    message: str
    waiver: Table | None


class CheckResult(Typed):
    value: StrictBool  # "yes" is no check result
    detail: str


class Approvals(Typed):
    required: list[Table]
    counted: list[Table]
    ignored: list[Table]
    missing: list[Table]
    satisfied: bool


class HashedFiles(Typed):
    """sha256 per file (null: missing) and the sha256 of that map."""

    files: dict[str, str | None]
    hash: str
    sources: dict[str, str] | None = None  # evidence only: source name -> file


class GateDecision(Typed):
    """``reports/gate_decision.json``: what the report, ``govtune verify`` and ``govtune status`` read.

    Not an evidence source: no rule can cite the decision it is part of.
    """

    decided_at: str
    candidate_version: str | None
    decision: Decision
    summary: str
    rules: list[JudgedRule]
    failing_rules: list[str]
    waived_rules: list[str]
    warnings: list[str]
    expired_waivers: list[Table]
    approvals: Approvals
    checks: dict[str, CheckResult]
    erasure_requests: list[Table]
    evidence: HashedFiles
    policy: HashedFiles
    registry: Table


# --- compute ---------------------------------------------------------------------------------


class StageEnergy(Typed):
    measured: bool
    kwh: float | None
    reason: str | None = None
    by_device: dict[str, float] | None = None
    sources: dict[str, str] | None = None
    estimated_kwh: dict[str, float] | None = None
    estimate_note: str | None = None


class StageCompute(Typed):
    """``reports/compute/<stage>.json``: what one stage execution used (:mod:`pipeline.common.compute`)."""

    stage: str
    started: str
    wall_s: float
    cpu_s: float
    gpu_s: float | None
    peak_rss_mb: float
    tokens: int | None
    energy: StageEnergy
    machine: Table


class ComputeTotals(Typed):
    wall_s: float
    cpu_s: float
    gpu_s: float | None
    peak_rss_mb: float | None
    tokens: int | None
    energy_kwh: float | None
    energy_measured_stages: list[str]
    energy_not_measured_stages: list[str]
    energy_complete: bool


class ComputeReport(Typed):
    """``reports/compute.json``: the stages that made the model, added up, with cost and emissions."""

    stages: dict[str, StageCompute]
    missing: list[str]
    totals: ComputeTotals
    cost: Table
    emissions: Table
    definitions: dict[str, str]


# the evidence sources rules name (``source:dotted.path``) and the model of each
SOURCES: dict[str, type[BaseModel]] = {
    "data_validation": DataValidation,
    "pii_report": PiiReport,
    "pii_benchmark": PiiBenchmark,
    "split_report": SplitReport,
    "train_metrics": TrainMetrics,
    "evaluation": Evaluation,
    "base_model": Provenance,
    "adapter": Provenance,
    "monitoring": Monitoring,
}
DERIVED: dict[str, type[BaseModel]] = {"checks": Checks}  # judged by the gate itself, not read from a file
# every stage output with a model: the evidence sources, and what the gate writes from them
OUTPUTS: dict[str, type[BaseModel]] = {
    **SOURCES, "gate_decision": GateDecision, "stage_compute": StageCompute, "compute": ComputeReport,
}  # fmt: skip


def validate_output(source: str, data: Any, where: str) -> None:
    """Checks one stage output against its model.

    Raises:
        GovtuneError: naming the file, the first offending field and what to do.
    """
    try:
        OUTPUTS[source].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise GovtuneError(
            f"{where}: {field}", f"malformed {source} evidence: {first['msg']} ({exc.error_count()} problem(s))",
            f"re-run the stage that writes it (`dvc repro --force <stage>`); if the stage's code changed its output, update {OUTPUTS[source].__name__} in pipeline/common/outputs.py",
        ) from None  # fmt: skip


def read_output(source: str, path: Path) -> dict[str, Any]:
    """Reads a stage output and validates it; the JSON as written (for paths into it).

    Raises:
        OSError, ValueError: the file is missing or not JSON.
        GovtuneError: it does not match its model.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    validate_output(source, data, str(path))
    return data


# --- schemas and evidence paths ----------------------------------------------------------------


def evidence_schema(source: str) -> dict[str, Any]:
    """The JSON Schema of one evidence source (what ``govtune policy schema`` exports)."""
    from pydantic import TypeAdapter

    model = DERIVED.get(source) or OUTPUTS[source]
    out = TypeAdapter(model).json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = (
        f"govtune evidence source {source!r}"
        if source in SOURCES or source in DERIVED
        else f"govtune stage output {source!r} (no rule can cite it)"
    )
    return out


def path_problem(path: str) -> str | None:
    """Why ``source:dotted.path`` cannot name a value of the evidence models, or None.

    Follows the path through the schema: a fixed key must be a property, ``*`` or any key
    enters a mapping, a number enters a list. A union (measured | not measured) accepts a path
    any member accepts. The nearest valid key is offered for a typo.
    """
    if ":" not in path:
        return f"evidence {path!r} is not source:dotted.path"
    source, dotted = path.split(":", 1)
    known = sorted({*SOURCES, *DERIVED})
    if source not in known:
        near = difflib.get_close_matches(source, known, n=1)
        return f"unknown evidence source {source!r}" + (
            f" (did you mean {near[0]!r}?)" if near else f"; sources: {', '.join(known)}"
        )
    root = evidence_schema(source)
    nodes, done = [root], []
    for part in dotted.split("."):
        step, keys = [], set()
        for node in nodes:
            for option in _options(node, root):
                nxt, named = _child(option, part, root)
                step.extend(nxt)
                keys |= named
        if not step:
            where = f"{source}:{'.'.join(done)}" if done else source
            near = difflib.get_close_matches(part, sorted(keys), n=1)
            hint = f" (did you mean {source + ':' + '.'.join([*done, near[0]])!r}?)" if near else ""
            have = f"; keys there: {', '.join(sorted(keys)[:12])}" if keys and not near else ""
            return f"unknown evidence path {path}: no {part!r} under {where}{hint}{have}"
        nodes, done = step, [*done, part]
    return None


def _options(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema node with $ref resolved and anyOf/oneOf spread (null members dropped)."""
    if "$ref" in node:
        return _options(root["$defs"][node["$ref"].rsplit("/", 1)[-1]], root)
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        return [o for m in members for o in _options(m, root) if o.get("type") != "null"]
    return [node]


def _child(node: dict[str, Any], part: str, root: dict[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
    """The schema nodes ``part`` leads to from ``node``, and the fixed keys ``node`` has."""
    props = node.get("properties", {})
    extra = node.get("additionalProperties")
    if part in props and part != "*":
        return [props[part]], set(props)
    if part == "*" and props and not extra:
        return list(props.values()), set(props)
    if node.get("type") == "object" and extra is not False and not props:
        return [extra if isinstance(extra, dict) else {}], set()
    if node.get("type") == "object" and extra is True:
        return [{}], set(props)
    if node.get("type") == "array" and part.isdigit():
        items = node.get("prefixItems")
        if items:
            return ([items[int(part)]] if int(part) < len(items) else []), set()
        return [node.get("items", {})], set()
    if node == {}:  # untyped detail (Any): any path goes on
        return [{}], set()
    return [], set(props)


def save_output(source: str, path: Path, data: dict[str, Any]) -> None:
    """Writes a stage output (atomically) once it validates against its model.

    Raises:
        GovtuneError: it does not match its model; nothing is written.
    """
    from pipeline.common.io import save_json

    validate_output(source, data, str(path))
    save_json(path, data)
