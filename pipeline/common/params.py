"""Typed models of ``params.yaml``: the one source of knobs and paths.

Each top-level section is named after the stage (or tool) that reads it. ``dvc.yaml``
declares, per stage, the exact keys it reads, so DVC re-runs a stage only when they change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.common.config import Strict, load_model

PARAMS_FILE = Path("params.yaml")  # DVC's default params file, relative to the repo root


class DataParams(Strict):
    """Paths of the raw input data (the pipeline's source, committed to git)."""

    raw: Path
    raw_pii_spans: Path


class LabelBias(Strict):
    """Injected label bias: priority (or routing) made to depend on a protected attribute."""

    strength: float = Field(ge=0.0, le=1.0)
    levels: int = Field(default=1, ge=1, le=3)
    attribute: Literal["gender", "age_band", "region"]
    group: str
    target: Literal["priority", "category"] = "priority"
    route_from: str = "technical_issue"
    route_to: str = "product_question"
    visible_only: bool = False

    @model_validator(mode="after")
    def _route_changes_something(self) -> LabelBias:
        # that both name categories is checked where the categories are known (synthesize.generate)
        if self.route_from == self.route_to:
            raise ValueError("route_from and route_to are the same category: the bias would change nothing")
        return self


class Defects(Strict):
    """Injected data defects, to exercise the data contract."""

    null_rate: float = Field(ge=0.0, le=1.0)
    duplicate_rate: float = Field(ge=0.0, le=1.0)
    overlong_rate: float = Field(ge=0.0, le=1.0)


class SynthesizeParams(Strict):
    """Knobs of the demo-data generator (``python -m pipeline.synthesize``)."""

    rows: int = Field(gt=0, le=5_000_000)
    seed: int
    tickets_per_customer: float = Field(ge=1.0)
    start_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    days: int = Field(gt=0)
    label_bias: LabelBias
    defects: Defects


class BaseModelParams(Strict):
    """Which allowlisted base model to use and where its HF-format copy goes."""

    id: str = Field(min_length=1)
    allowlist: Path
    out_dir: Path
    dtype: Literal["float32", "bfloat16", "float16"]


class ValidateParams(Strict):
    """Stage validate: the data contract and where its results go."""

    contract: Path
    report: Path
    html: Path
    max_failing_ids: int = Field(ge=0)


class ScrubParams(Strict):
    """Stage scrub: the PII policy, outputs, and how the work is spread over cores."""

    policy: Path
    out: Path
    report: Path
    engine: Literal["local", "ray"]
    workers: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    chunk_records: int = Field(ge=1)
    rescan: bool


class PiiBenchmarkParams(Strict):
    """Stage pii_benchmark: the scrub's analyzer on a labelled corpus it was not written for."""

    corpus: Path
    report: Path
    batch_size: int = Field(ge=1)


class CanaryParams(Strict):
    """Secret canaries added to the train split to measure memorisation."""

    count: int = Field(ge=0)
    repeats: int = Field(ge=1)
    seed: int


class SplitParams(Strict):
    """Stage split: fractions, grouping and stratification columns, outputs."""

    train: float = Field(gt=0.0, lt=1.0)
    val: float = Field(gt=0.0, lt=1.0)
    salt: str = Field(min_length=1)
    group_by: str
    stratify_by: str
    out_dir: Path
    report: Path
    canaries: CanaryParams

    @model_validator(mode="after")
    def _leaves_a_test_split(self) -> SplitParams:
        if self.train + self.val >= 1.0:
            raise ValueError("train + val must be below 1 (the rest is the test split)")
        return self


class TrackingParams(Strict):
    """Where lineage goes (MLflow). Not a DVC param of any stage: it does not change outputs."""

    enabled: bool
    uri: str
    experiment: str
    artifact_location: Path
    registered_model: str


class ComputeParams(Strict):
    """What each stage used and what it cost (``reports/compute.json``). Not a DVC param of the
    measured stages (measuring does not change their outputs); the report stage reads the prices
    and the carbon intensity."""

    dir: Path
    report: Path
    energy: Literal["auto", "codecarbon", "off"]
    country_iso_code: str = Field(pattern=r"^[A-Z]{3}$")
    kg_co2e_per_kwh: float | None = Field(default=None, ge=0)
    eur_per_cpu_hour: float = Field(ge=0)
    eur_per_gpu_hour: float = Field(ge=0)
    eur_per_kwh: float = Field(ge=0)


class FinetuneParams(Strict):
    """Stage finetune: LoRA, optimisation, batching, checkpoints, outputs."""

    method: Literal["lora", "full"] = "lora"
    distributed: Literal["ddp", "fsdp"] = "ddp"
    lora_r: int = Field(ge=1)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    warmup_steps: int = Field(ge=0)
    epochs: float = Field(gt=0)
    max_steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    max_seq_len: int = Field(ge=16)
    max_grad_norm: float = Field(gt=0)
    label_weight: float = Field(gt=0)
    share_prefix: bool = False
    counterfactual_augmentation: bool
    seed: int
    precision: Literal["auto", "fp32", "bf16"]
    eval_interval: int = Field(ge=1)
    eval_max_examples: int = Field(ge=1)
    checkpoint_interval: int = Field(ge=0)
    checkpoint_dir: Path
    out_dir: Path
    metrics: Path
    plots_dir: Path
    log_model: bool
    log_base_in_model: bool
    max_new_tokens: int = Field(ge=8)


class EvaluateParams(Strict):
    """Stage evaluate: sample sizes (the time budget), policy, outputs."""

    fairness_policy: Path
    precision: Literal["auto", "fp32", "bf16"]
    max_test_examples: int = Field(ge=1)
    loss_examples: int = Field(ge=1)
    generate_examples: int = Field(ge=1)
    regurgitation_examples: int = Field(ge=1)
    canary_candidates: int = Field(ge=10)
    max_seq_len: int = Field(ge=16)
    batch_size: int = Field(ge=1)
    seed: int
    report: Path
    summary: Path
    plots_dir: Path


class GateParams(Strict):
    """Stage gate: the policy files it judges with, where the decision and the audit log go."""

    promotion_policy: Path
    privacy_policy: Path
    waivers: Path
    approvals_dir: Path
    decision: Path
    audit_log: Path


class ReportParams(Strict):
    """Stage report: what the system is for (report and model card text) and where outputs go."""

    system_name: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    intended_use: str = Field(min_length=1)
    out_of_scope_use: str = Field(min_length=1)
    json_: Path = Field(alias="json")
    html: Path
    pdf: Path
    browser: str = Field(min_length=1)
    model_card: Path
    manifest: Path

    @property
    def json(self) -> Path:  # noqa: D102 - the `json` key (aliased: pydantic reserves the name)
        return self.json_


class MonitorParams(Strict):
    """Stage monitor and ``govtune monitor``: incoming batches, drift samples, the champion's re-evaluation."""

    incoming: Path
    policy: Path
    out_dir: Path
    embedding_sample: int = Field(ge=10)
    permutations: int = Field(ge=10)
    seed: int
    champion_examples: int = Field(ge=0)
    fail_on_breach: bool


class Params(Strict):
    """The whole ``params.yaml``."""

    tracking: TrackingParams
    compute: ComputeParams
    data: DataParams
    synthesize: SynthesizeParams
    base_model: BaseModelParams
    # `validate` would shadow pydantic's BaseModel.validate, hence the alias.
    validate_: ValidateParams = Field(alias="validate")
    scrub: ScrubParams
    pii_benchmark: PiiBenchmarkParams
    split: SplitParams
    finetune: FinetuneParams
    evaluate: EvaluateParams
    gate: GateParams
    report: ReportParams
    monitor: MonitorParams


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Loads and validates ``params.yaml``.

    Raises:
        GovtuneError: naming the file, line and key of every problem.
    """
    return load_model(Params, path)
