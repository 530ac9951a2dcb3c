"""Stage gate: judge the evidence against the rules in policies/, decide, record, promote.

Every rule of ``policies/promotion.yaml`` and ``policies/privacy.yaml`` reads one value (or one
value per key, with ``*``) from the evidence the stages wrote, compares it with a threshold or
a baseline (the base model, or the current champion), and passes, fails or errors. A failing
blocking rule rejects the candidate unless a valid waiver (``policies/waivers.yaml``) covers
it; an error (missing evidence, an unknown metric path, stale evidence) always rejects. If
every blocking rule holds, the approvals ``policies/promotion.yaml`` requires are counted
(``policies/approvals/``, written by ``govtune approve``, bound to the evidence hash):

    REJECTED          a blocking rule failed (not waived) or errored
    PENDING_APPROVAL  the rules hold, approvals are missing
    APPROVED          the rules hold and the approvals are in

The candidate (the finetune run's logged model) becomes a version of the registered model,
tagged with the decision, the policy and evidence hashes and every observed value. The alias
(``champion``) moves only on APPROVED; the champion it replaces keeps ``previous``. A champion
re-judged and REJECTED loses its alias (fail closed); one re-judged PENDING keeps it. Every decision and promotion is appended to the
hash-chained audit log.

Inputs: the stage outputs under ``reports/`` and the two ``provenance.json`` files; the
policies. Outputs: ``reports/gate_decision.json``; registry version, tags, aliases; the audit log.
Run: ``dvc repro gate`` (or ``python -m pipeline.gate``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.common.erasure import PENDING_TAG as ERASURE_TAG
from pipeline.common.erasure import erased_in, requests
from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.finetuned import weights_sha256
from pipeline.common.io import dumps_json, evidence_of_this_run, sha256_bytes, sha256_file
from pipeline.common.outputs import Checks, Decision, Malformed, Status, read_output, save_output
from pipeline.common.params import Params, load_params
from pipeline.common.policy import (
    Approval,
    PromotionPolicy,
    Rule,
    Waiver,
    check_rule_ids,
    load_allowlist,
    load_approvals,
    load_promotion_policy,
    load_rule_set,
    load_waivers,
    policy_bundle,
)
from pipeline.common.rules import RuleResult, champion_values, judge_rule
from pipeline.common.tracking import TAG

log = logging.getLogger(__name__)

APPROVED, REJECTED, PENDING = Decision.APPROVED, Decision.REJECTED, Decision.PENDING_APPROVAL


# --- evidence ------------------------------------------------------------------------------


def evidence_paths(params: Params) -> dict[str, Path]:
    """The file behind each evidence source (``checks`` is derived, not a file)."""
    return {
        "data_validation": params.validate_.report,
        "pii_report": params.scrub.report,
        "pii_benchmark": params.pii_benchmark.report,
        "split_report": params.split.report,
        "train_metrics": params.finetune.metrics,
        "evaluation": params.evaluate.report,
        "base_model": params.base_model.out_dir / "provenance.json",
        "adapter": params.finetune.out_dir / "provenance.json",
    }


def load_evidence(paths: dict[str, Path]) -> dict[str, Any]:
    """Reads each evidence file through its model (``pipeline/common/outputs.py``).

    A missing or unreadable file is absent; one that does not validate is kept as
    :class:`Malformed` with the reason, so each rule that reads it errors and says why.
    """
    evidence: dict[str, Any] = {}
    for source, path in paths.items():
        try:
            evidence[source] = read_output(source, path)
        except (OSError, ValueError) as exc:
            log.warning("evidence %s (%s) unavailable: %s", source, path, type(exc).__name__)
        except GovtuneError as exc:
            log.error("evidence %s is malformed: %s", source, exc)
            evidence[source] = Malformed(f"{exc.where}: {exc.what}")
    return evidence


def hash_manifest(files: list[Path]) -> dict[str, Any]:
    """``{"files": {path: sha256}, "hash": sha256 of that map}``; a missing file maps to null."""
    from pipeline.common.evidence import list_files

    listed = list_files(files, missing_ok=True)
    return {"files": listed, "hash": sha256_bytes(dumps_json(listed).encode())}


def derive_checks(
    params: Params, evidence: dict[str, Any], erasures: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Re-checks the gate does itself: allowlist, hashes, and that the evidence is about this adapter."""
    base, adapter = evidence.get("base_model"), evidence.get("adapter")
    name, ok, detail = erasure_check(params, erasure_requests(params) if erasures is None else erasures)
    return {
        "base_model_approved": base_model_check(params, base),
        **adapter_checks(params, base, adapter),
        name: _check(ok, detail),
        "evaluation_of_this_adapter": evaluation_check(params, evidence.get("evaluation")),
    }


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"value": bool(ok), "detail": detail}


def base_model_check(params: Params, base: dict[str, Any] | None) -> dict[str, Any]:
    """The base model is on the allowlist and its files still have the listed sha256."""
    if base is None:
        return _check(False, "no base model provenance: run `dvc repro base_model`")
    allowlist = load_allowlist(params.base_model.allowlist)
    entry = next((m for m in allowlist.models if m.id == base.get("model_id")), None)
    if entry is None:
        return _check(False, f"{base.get('model_id')!r} is not on {params.base_model.allowlist}")
    if dict(entry.files) != base.get("source_files_sha256"):
        return _check(False, f"the files of {entry.id!r} no longer match the sha256 in {params.base_model.allowlist}")
    return _check(True, f"{entry.id} {entry.version}: on the allowlist, every file's sha256 matches")


def adapter_checks(
    params: Params, base: dict[str, Any] | None, adapter: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The adapter was trained from this base, on the current train split, and is unchanged since."""
    from pipeline.common.tracking import dvc_md5

    names = ("adapter_built_from_base", "adapter_files_intact", "trained_on_current_split")
    if adapter is None or base is None:
        return {n: _check(False, "no adapter or base provenance: run `dvc repro`") for n in names}
    adapter_dir = params.finetune.out_dir
    base_sha = base.get("output_files_sha256", {}).get("model.safetensors")
    expected = adapter.get("adapter_files_sha256", {})
    changed = [
        n for n, sha in expected.items() if not (adapter_dir / n).is_file() or sha256_file(adapter_dir / n) != sha
    ]
    train = params.split.out_dir / "train.jsonl"
    same = train.is_file() and adapter.get("data_md5", {}).get("train") == dvc_md5(train)
    return {
        "adapter_built_from_base": _check(
            adapter.get("base_model_sha256") == base_sha, "adapter provenance names the base weights' sha256"
        ),
        "adapter_files_intact": _check(
            bool(expected) and not changed,
            f"changed since training: {changed}" if changed else "every adapter file matches its provenance",
        ),
        "trained_on_current_split": _check(
            same, f"adapter provenance's train md5 {'matches' if same else 'differs from'} {train}"
        ),
    }


def evaluation_check(params: Params, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """evaluation.json was computed on the adapter in place, not on an earlier one."""
    evaluated = (evaluation or {}).get("inputs", {}).get("adapter_sha256")
    fresh = evaluated is not None and evaluated == weights_sha256(params.finetune.out_dir)
    return _check(
        fresh,
        "evaluation.json was computed on the adapter in place"
        if fresh
        else "stale evidence: evaluation.json is about another adapter; run `dvc repro evaluate`",
    )


def erasure_requests(params: Params) -> list[dict[str, Any]]:
    """The erasure requests in the audit log (``govtune forget``), oldest first."""
    return requests(params.gate.audit_log)


def erasure_check(params: Params, entries: list[dict[str, Any]]) -> tuple[str, bool, str]:
    """No subject of an erasure request is in the train split, by pseudonym."""
    from pipeline.common.policy import load_pii_policy

    name = "no_erased_subject_in_training"
    if not entries:
        return name, True, "no erasure request in the audit log"
    column = params.split.group_by
    if load_pii_policy(params.scrub.policy).identifier_columns.get(column) != "pseudonymize":
        return (
            name,
            False,
            f"{len(entries)} erasure request(s), but {column} is not pseudonymized: membership cannot be checked",
        )
    train = params.split.out_dir / "train.jsonl"
    found = erased_in(train, column, entries)
    return name, found == 0, f"{len(entries)} erasure request(s); records of erased subjects in {train}: {found}"


def erasure_summary(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The erasure requests honoured so far, for the decision and the report (hash prefix only)."""
    keep = (
        "at",
        "subject",
        "records_removed",
        "affected_versions",
        "unknown_versions",
        "cache_objects_deleted",
        "remote_objects_deleted",
        "remotes_not_purged",
        "reason",
    )
    return [{k: (e.get(k)[:16] if k == "subject" else e.get(k)) for k in keep} for e in entries]


def apply_waivers(results: list[RuleResult], waivers: list[Waiver], today: date) -> list[dict[str, Any]]:
    """Turns failed blocking rules covered by a valid waiver into "waived"; returns expired ones."""
    expired = []
    for waiver in waivers:
        if waiver.expires < today:
            expired.append({**waiver.model_dump(mode="json"), "state": "expired"})
    for res in results:
        if res.status != "failed":
            continue
        mine = [w for w in waivers if w.rule == res.rule.id]
        valid = [w for w in mine if w.created <= today <= w.expires]
        covered = all(any(w.scope in ("*", key) for w in valid) for key in res.failing_keys)
        if valid and covered:
            w = next(w for w in valid if w.scope == "*" or w.scope in res.failing_keys)
            res.status = Status.WAIVED
            res.waiver = {**w.model_dump(mode="json"), "state": "applied"}
        elif mine:
            w = mine[0]
            state = "expired" if w.expires < today else "not_yet_valid" if w.created > today else "out_of_scope"
            res.waiver = {**w.model_dump(mode="json"), "state": state}
    return expired


def count_approvals(
    policy: PromotionPolicy, approvals: list[Approval], name: str, version: str | None, evidence_hash: str
) -> dict[str, Any]:
    """Which approvals count: same registered model, version and evidence hash, a required role."""
    counted, ignored = [], []
    for a in approvals:
        why = None
        if a.evidence_hash != evidence_hash:
            why = "approved other evidence (the candidate changed since)"
        elif a.registered_model != name or (version is not None and a.version != version):
            why = f"for {a.registered_model} v{a.version}, not this candidate"
        elif a.role not in {r.role for r in policy.approvals.required}:
            why = f"role {a.role!r} is not required by the promotion policy"
        entry = {"approver": a.approver, "role": a.role, "version": a.version, "approved_at": a.approved_at.isoformat()}
        (ignored if why else counted).append({**entry, **({"ignored_because": why} if why else {})})
    missing = []
    for req in policy.approvals.required:
        have = len({a["approver"] for a in counted if a["role"] == req.role})
        if have < req.count:
            missing.append({"role": req.role, "needed": req.count, "have": have})
    return {"required": [r.model_dump() for r in policy.approvals.required], "counted": counted, "ignored": ignored,
            "missing": missing, "satisfied": not missing}  # fmt: skip


def decide(results: list[RuleResult], approvals: dict[str, Any]) -> str:
    """REJECTED on any unwaived blocking failure or any error; else PENDING until approvals are in."""
    if any(r.status in ("failed", "error") for r in results):
        return REJECTED
    return APPROVED if approvals["satisfied"] else PENDING


def summarize(decision: str, results: list[RuleResult], approvals: dict[str, Any]) -> str:
    """One line for logs, the version description and the exit message."""
    failing = [r.rule.id for r in results if r.status in ("failed", "error")]
    waived = [r.rule.id for r in results if r.status == "waived"]
    parts = [f"{decision}: {sum(r.status == 'passed' for r in results)}/{len(results)} rules passed"]
    if failing:
        parts.append(f"failing: {', '.join(failing)}")
    if waived:
        parts.append(f"waived: {', '.join(waived)}")
    if decision == PENDING:
        parts.append("awaiting " + ", ".join(f"{m['needed'] - m['have']} x {m['role']}" for m in approvals["missing"]))
    return "; ".join(parts)


# --- the stage ------------------------------------------------------------------------------


@dataclass
class Policies:
    """Everything under policies/ the gate reads, loaded and cross-checked."""

    promotion: PromotionPolicy
    rules: list[Rule]
    waivers: list[Waiver]
    approvals: list[Approval]
    files: list[Path]


def load_policies(params: Params) -> Policies:
    """Loads and cross-checks the gate's policy files (fails closed on any problem).

    Raises:
        GovtuneError: a file is malformed, a rule id repeats, a waiver names an unknown rule.
    """
    cfg = params.gate
    promotion = load_promotion_policy(cfg.promotion_policy)
    rules = check_rule_ids(
        {str(cfg.promotion_policy): promotion, str(cfg.privacy_policy): load_rule_set(cfg.privacy_policy)}
    )
    waivers = load_waivers(cfg.waivers).waivers
    known = {r.id for r in rules}
    for i, w in enumerate(waivers):
        if w.rule not in known:
            raise GovtuneError(
                f"{cfg.waivers}: waivers.{i}.rule",
                f"waiver for unknown rule {w.rule!r}",
                "use a rule id from promotion.yaml or privacy.yaml",
            )
    approvals = load_approvals(cfg.approvals_dir)
    return Policies(promotion, rules, waivers, approvals, policy_bundle(params))


def run(
    params: Params, policies: Policies, champion: dict[str, float] | None, version: str | None, today: date
) -> dict[str, Any]:
    """Judges every rule and decides; pure apart from reading evidence files and hashing them."""
    paths = evidence_paths(params)
    evidence = load_evidence(paths)
    erasures = erasure_requests(params)
    # the gate's own checks treat a malformed file as missing; the rules that read it say why
    checks = derive_checks(params, {k: v for k, v in evidence.items() if not isinstance(v, Malformed)}, erasures)
    evidence["checks"] = Checks.model_validate({k: v["value"] for k, v in checks.items()}).model_dump()
    results = [judge_rule(rule, evidence, champion) for rule in policies.rules]
    expired = apply_waivers(results, policies.waivers, today)
    manifest = hash_manifest([*paths.values(), params.finetune.out_dir])
    approvals = count_approvals(
        policies.promotion, policies.approvals, params.tracking.registered_model, version, manifest["hash"]
    )
    decision = decide(results, approvals)
    return {
        "decision": decision,
        "summary": summarize(decision, results, approvals),
        "rules": [r.to_json() for r in results],
        "failing_rules": [r.rule.id for r in results if r.status in ("failed", "error")],
        "waived_rules": [r.rule.id for r in results if r.status == "waived"],
        "warnings": [r.rule.id for r in results if r.status == "warning"],
        "expired_waivers": expired,
        "approvals": approvals,
        "checks": checks,
        "erasure_requests": erasure_summary(erasures),
        "evidence": {"sources": {k: str(v) for k, v in paths.items()}, **manifest},
        "policy": hash_manifest(policies.files),
    }


def record(
    params: Params, policies: Policies, decision: dict[str, Any], tracked: Any, registry: Any | None
) -> dict[str, Any]:
    """Registers the candidate, tags it, moves aliases on APPROVED, appends the audit entry;
    returns what happened."""
    from pipeline.common.audit import append_entry
    from pipeline.common.registry import logged_model_id

    out: dict[str, Any] = {
        "registered_model": params.tracking.registered_model,
        "registered": False,
        "gate_run_id": tracked.run_id,
    }
    model_id = logged_model_id(params.finetune.metrics) if registry else None
    if registry is None or model_id is None:
        out["note"] = (
            "not registered: tracking is disabled"
            if registry is None
            else "not registered: the finetune run logged no model (finetune.log_model)"
        )
    else:
        version = decision["candidate_version"]
        registry.set_tags(version, version_tags(params, decision, tracked.run_id))
        registry.set_description(version, decision["summary"])
        out.update(registered=True, version=version, logged_model_id=model_id)
        out.update(move_aliases(registry, policies.promotion, decision["decision"], version))
    entry = append_entry(params.gate.audit_log, "gate_decision", {
        "decision": decision["decision"], "summary": decision["summary"], "registered_model": out["registered_model"],
        "version": out.get("version"), "champion_before": out.get("champion_before"), "champion_after": out.get("champion_after"),
        "policy_hash": decision["policy"]["hash"], "evidence_hash": decision["evidence"]["hash"],
        "approvals": [f"{a['approver']} ({a['role']})" for a in decision["approvals"]["counted"]],
    })  # fmt: skip
    out["audit_entry"] = entry["hash"]
    if registry is not None and out.get("version"):
        registry.set_tags(out["version"], {f"{TAG}audit_entry": entry["hash"]})
    return out


def version_tags(params: Params, decision: dict[str, Any], gate_run_id: str | None) -> dict[str, str]:
    """The registry tags that tie a version to its decision, policy, evidence and runs."""
    from pipeline.common.registry import training_run_id

    return {
        f"{TAG}decision": decision["decision"], f"{TAG}policy_hash": decision["policy"]["hash"],
        f"{TAG}evidence_hash": decision["evidence"]["hash"], f"{TAG}decided_at": decision["decided_at"],
        f"{TAG}decision_report": str(params.gate.decision), f"{TAG}failing_rules": ",".join(decision["failing_rules"]) or "none",
        f"{TAG}waived_rules": ",".join(decision["waived_rules"]) or "none", f"{TAG}gate_run_id": gate_run_id or "",
        f"{TAG}training_run_id": training_run_id(params.finetune.metrics) or "",
        **{f"{TAG}observed.{r['id']}": r["observed"] for r in decision["rules"] if isinstance(r["observed"], int | float)},
    }  # fmt: skip


def move_aliases(registry: Any, promotion: PromotionPolicy, verdict: str, version: str) -> dict[str, Any]:
    """Moves the champion alias to an APPROVED version (the old champion becomes the previous
    one), takes it off a REJECTED champion, and off any version trained on erased data."""
    from pipeline.common.audit import now_utc

    before = registry.version_by_alias(promotion.alias)
    out: dict[str, Any] = {"champion_before": str(before.version) if before else None}
    erased = {str(mv.version) for mv in (before, registry.version_by_alias(promotion.previous_alias))
              if mv is not None and mv.tags.get(ERASURE_TAG)}  # fmt: skip
    if verdict == APPROVED and (before is None or str(before.version) != version):
        if before is not None and str(before.version) not in erased:
            registry.set_alias(promotion.previous_alias, str(before.version))
        registry.set_alias(promotion.alias, version)
        registry.set_tags(version, {f"{TAG}promoted_at": now_utc(), f"{TAG}promoted_by": "gate"})
        out["alias_moved"] = True
    elif verdict == REJECTED and before is not None and str(before.version) == version:
        registry.delete_alias(promotion.alias)  # fail closed: a champion that no longer passes is not kept
        out["alias_removed"] = True
    # A version trained on erased data is never kept as champion, nor for a rollback.
    for alias in (promotion.alias, promotion.previous_alias):
        holder = registry.version_by_alias(alias)
        if holder is not None and str(holder.version) in erased:
            registry.delete_alias(alias)
            out["alias_removed" if alias == promotion.alias else "previous_alias_removed"] = True
    out["erasure_pending_versions"] = sorted(erased, key=int)
    after = registry.version_by_alias(promotion.alias)
    out["champion_after"] = str(after.version) if after else None
    return out


def candidate_version(params: Params, alias: str) -> tuple[Any | None, str | None, dict[str, float] | None]:
    """The registry (None if tracking is off), the candidate's version (registering it), the champion's values."""
    from pipeline.common.registry import logged_model_id, open_registry

    registry = open_registry(params.tracking)
    if registry is None:
        return None, None, None
    model_id = logged_model_id(params.finetune.metrics)
    version = registry.register(model_id, weights_sha256(params.finetune.out_dir)) if model_id else None
    return registry, version, champion_values(registry.version_by_alias(alias))


def approve(version: str, approver: str, role: str, comment: str, params_path: Path) -> Path:
    """Records one approval of a registered version (``govtune approve``), bound to its evidence.

    Raises:
        GovtuneError: no registry, no such version, a rejected version, or a role the policy does not ask for.
    """
    import re
    from datetime import UTC, datetime

    from pipeline.common.audit import append_entry
    from pipeline.common.policy import Approval
    from pipeline.common.registry import open_registry

    params = load_params(params_path)
    cfg = params.gate
    promotion = load_promotion_policy(cfg.promotion_policy)
    roles = sorted({r.role for r in promotion.approvals.required})
    if role not in roles:
        raise GovtuneError(f"{cfg.promotion_policy}: approvals.required", f"role {role!r} is not one the promotion policy asks for (required: {roles or 'none'})",
                           "approve in a required role, or have the policy owner add the role")  # fmt: skip
    registry = open_registry(params.tracking)
    if registry is None:
        raise GovtuneError(
            "params.yaml: tracking.enabled",
            "tracking is disabled: there is no registry to approve in",
            "enable tracking and re-run `dvc repro`",
        )
    mv = registry.get_version(version)
    decision = mv.tags.get(f"{TAG}decision")
    evidence_hash = mv.tags.get(f"{TAG}evidence_hash")
    if decision is None or evidence_hash is None:
        raise GovtuneError(
            f"registry {registry.name} v{version}", "the gate has not judged this version", "run `dvc repro` first"
        )
    if decision == REJECTED:
        raise GovtuneError(f"registry {registry.name} v{version}", "the gate rejected this version; an approval cannot override failing rules",
                           f"see {cfg.decision}; fix the failures or record a waiver in {cfg.waivers}")  # fmt: skip
    approval = Approval(registered_model=registry.name, version=version, evidence_hash=evidence_hash, approver=approver, role=role,
                        approved_at=datetime.now(UTC).replace(microsecond=0), comment=comment)  # fmt: skip
    slug = re.sub(r"[^a-z0-9]+", "-", approver.lower()).strip("-") or "approver"
    path = cfg.approvals_dir / f"{registry.name}-v{version}-{role}-{slug}.yaml"
    import yaml

    from pipeline.common.io import save_text

    save_text(
        path,
        "# Written by `govtune approve`; do not edit (revoke by deleting it).\n"
        + yaml.safe_dump(approval.model_dump(mode="json"), sort_keys=False),
    )
    append_entry(cfg.audit_log, "approval", {"registered_model": registry.name, "version": version, "approver": approver, "role": role,
                                              "evidence_hash": evidence_hash, "file": str(path)})  # fmt: skip
    return path


def main() -> None:
    """Judges, records, writes the decision (the report stage fails the run on REJECTED)."""
    from pipeline.common.audit import now_utc
    from pipeline.common.tracking import stage_run

    params = load_params()
    cfg = params.gate
    with evidence_of_this_run(cfg.decision):  # a gate that fails leaves no earlier decision behind
        policies = load_policies(params)  # before anything is recorded: a bad policy decides nothing
        deps = [*evidence_paths(params).values(), *policies.files, cfg.approvals_dir]
        with stage_run(params.tracking, "gate", deps, [cfg.decision], params.compute) as tracked:
            registry, version, champion = candidate_version(params, policies.promotion.alias)
            decision = {
                "decided_at": now_utc(),
                "candidate_version": version,
                **run(params, policies, champion, version, date.today()),
            }
            decision["registry"] = record(params, policies, decision, tracked, registry)
            save_output("gate_decision", cfg.decision, decision)
            tracked.log_params(
                {"policy_hash": decision["policy"]["hash"], "evidence_hash": decision["evidence"]["hash"]}
            )
            tracked.log_metrics({"gate/rules_total": len(decision["rules"]), "gate/rules_failing": len(decision["failing_rules"]),
                                 "gate/rules_waived": len(decision["waived_rules"]), "gate/rules_warning": len(decision["warnings"])})  # fmt: skip
            tracked.set_tags({f"{TAG}decision": decision["decision"], f"{TAG}version": str(version or "")})
            tracked.log_artifact(cfg.decision, "reports")
    # A rejection is enforced by the report stage (fail_on_reject), once the report is written too.
    log.info("gate: %s (decision: %s)", decision["summary"], cfg.decision)


if __name__ == "__main__":
    run_main(main)
