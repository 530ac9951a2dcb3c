"""The ``govtune`` command line: checks and helpers around the DVC pipeline.

The pipeline itself runs with ``dvc repro`` (each stage is ``python -m pipeline.<stage>``).
This CLI holds what users run by hand: ``govtune policy lint`` checks ``params.yaml`` and
every policy file against its typed model; ``govtune policy schema`` exports those models as
JSON Schema for editors; ``govtune approve`` records a human approval of a model version;
``govtune verify`` re-checks the signed evidence manifest and the audit chain; ``govtune forget``
honours an erasure request (``pipeline/forget.py``); ``govtune
lineage`` walks from a registered version back to the raw data; ``govtune report --open``
opens the latest compliance report; ``govtune synthesize`` writes the demo data.

Run: ``govtune --help``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.common.errors import EXIT_USER_ERROR, GovtuneError


def _policy_models() -> dict[str, type]:
    """Maps each policy file name to its typed model."""
    from pipeline.common import policy as p

    return {
        "models.yaml": p.ModelAllowlist, "data_contract.yaml": p.DataContract, "pii.yaml": p.PiiPolicy,
        "fairness.yaml": p.FairnessPolicy, "promotion.yaml": p.PromotionPolicy, "privacy.yaml": p.RuleSet, "monitoring.yaml": p.RuleSet,
        "waivers.yaml": p.Waivers, "approval.yaml": p.Approval,
    }  # fmt: skip


def lint_policies(params_path: Path = Path("params.yaml")) -> list[str]:
    """Validates params.yaml and every policy file the pipeline reads; one line per problem."""
    from pipeline.common.params import load_params
    from pipeline.common.policy import (
        load_allowlist,
        load_data_contract,
        load_fairness_policy,
        load_pii_policy,
        load_rule_set,
    )
    from pipeline.gate import load_policies

    try:
        params = load_params(params_path)
    except GovtuneError as exc:
        return [str(exc)]
    problems: list[str] = []
    checks = [
        (load_allowlist, params.base_model.allowlist), (load_data_contract, params.validate_.contract),
        (load_pii_policy, params.scrub.policy), (load_fairness_policy, params.evaluate.fairness_policy),
        (lambda _: load_policies(params), params.gate.promotion_policy),  # rules, waivers, approvals, cross-checks
        (load_rule_set, params.monitor.policy),
    ]  # fmt: skip
    for loader, path in checks:
        try:
            loader(path)
        except GovtuneError as exc:
            problems.append(str(exc))
    for path in (params.gate.promotion_policy, params.gate.privacy_policy, params.monitor.policy):
        problems.extend(str(exc) for exc in evidence_path_problems(path))
    return problems


def evidence_path_problems(path: Path) -> list[GovtuneError]:
    """Every rule's evidence path (and its baseline's) checked against the evidence models'
    schemas (``pipeline/common/outputs.py``): a path that names no value is an error at its line."""
    from pipeline.common.config import line_of, load_yaml
    from pipeline.common.outputs import path_problem

    try:
        data, node = load_yaml(path)
    except GovtuneError:
        return []  # reported by the loader above
    found = []
    rules = data.get("rules") if isinstance(data, dict) else None
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        baseline = rule.get("baseline") if isinstance(rule.get("baseline"), dict) else {}
        for keys, value in (
            (("rules", i, "evidence"), rule.get("evidence")),
            (("rules", i, "baseline", "evidence"), baseline.get("evidence")),
        ):
            problem = path_problem(value) if isinstance(value, str) else None
            if problem:
                where = f"{path}:{line_of(node, keys)}: {'.'.join(map(str, keys))}"
                found.append(GovtuneError(where, f"rule {rule.get('id')!r}: {problem}",
                                          "name a value the stage writes (the schemas: policies/schemas/evidence/)"))  # fmt: skip
    return found


def export_schemas(out_dir: Path) -> list[Path]:
    """Writes ``<file>.schema.json`` (JSON Schema of each policy file's model) into ``out_dir``, and
    ``evidence/<source>.schema.json`` (each evidence source rules read, and the gate's decision) beside them."""
    from pipeline.common.io import save_json
    from pipeline.common.outputs import DERIVED, OUTPUTS, evidence_schema

    written = []
    for name, model in _policy_models().items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"govtune policies/{name if name != 'approval.yaml' else 'approvals/*.yaml'}"
        path = out_dir / name.replace(".yaml", ".schema.json")
        save_json(path, schema)
        written.append(path)
    for source in sorted({*OUTPUTS, *DERIVED}):
        path = out_dir / "evidence" / f"{source}.schema.json"
        save_json(path, evidence_schema(source))
        written.append(path)
    return written


def _cmd_policy_lint(args: argparse.Namespace) -> int:
    problems = lint_policies(args.params)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USER_ERROR
    print("ok: params.yaml and policies/ are valid")
    return 0


def _cmd_policy_schema(args: argparse.Namespace) -> int:
    for path in export_schemas(args.out):
        print(path)
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    from pipeline.gate import approve

    path = approve(args.version, args.approver, args.role, args.comment, args.params)
    print(f"recorded {path}; run `dvc repro` so the gate counts it")
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from pipeline import monitor
    from pipeline.common.offline import configure_offline
    from pipeline.common.params import load_params

    configure_offline()
    params = load_params(args.params)
    name = args.batch.parent.name if args.batch.name == "tickets.jsonl" else args.batch.stem
    out = args.out or params.monitor.out_dir.parent / name  # reports/monitoring/<batch>
    if args.accept:
        done = monitor.accept(params, args.batch)
        print(
            f"appended {done['records']} record(s) to {params.data.raw} (md5 {done['raw_md5_after']}); "
            "run `dvc repro`: the gate compares the new candidate with the champion before the alias moves"
        )
        return 0
    registry, champion = monitor.current_champion(params)
    report = monitor.run(params, args.batch, out, args.policy or params.monitor.policy, champion)
    version = monitor.record(params, report, out, registry, champion)
    for rule in report["rules"]:
        print(
            f"  {rule['status']:14} {rule['id']}: {rule['observed']} ({rule['comparator']} {rule['target']})"
            + (f" - {rule['message']}" if rule["status"] in ("not_applicable", "error") else "")
        )
    print(
        f"monitor: {report['status'].upper()} - {report['summary']}; report {out / 'monitoring_report.html'}"
        + (f"; champion v{version} tagged" if version else "; no champion in the registry")
    )
    return 1 if report["breached_blocking_rules"] else 0


def _cmd_forget(args: argparse.Namespace) -> int:
    from pipeline.common.params import load_params
    from pipeline.forget import forget

    params = load_params(args.params)
    done = forget(params, args.customer_id, args.requested_by, args.reason)
    print(
        f"erasure request recorded in {params.gate.audit_log} as subject {done.subject[:16]}... (keyed hash; the id is not stored)"
    )
    print(
        f"  removed {done.records_removed} record(s) and {done.spans_removed} labelled span(s) from {params.data.raw} and {params.monitor.incoming}"
    )
    print(
        f"  model versions trained on the subject: {', '.join(done.affected_versions) or 'none'}"
        + (
            f"; train set no longer readable, counted as affected: {', '.join(done.unknown_versions)}"
            if done.unknown_versions
            else ""
        )
    )
    print(f"  tagged {', '.join(done.affected_versions + done.unknown_versions) or 'none'} erasure_pending; "
          f"DVC cache objects holding the subject deleted: {done.cache_objects_deleted}")  # fmt: skip
    for name, count in done.remote_objects_deleted.items():
        print(f"  DVC remote {name}: {count} object(s) holding the subject deleted")
    for note in done.notes:
        print(f"  note: {note}")
    print(
        "next: `dvc repro` retrains without the subject; the gate will not keep an erasure_pending version as champion"
    )
    return 0


def verify(params_path: Path, manifest_path: Path | None = None) -> list[str]:
    """Every problem found: changed or missing artifacts, a bad signature, a broken audit chain."""
    import os

    from pipeline.common.audit import read_log, verify_chain
    from pipeline.common.evidence import PUBKEY_ENV, verify_manifest
    from pipeline.common.params import load_params
    from pipeline.report import load_json

    params = load_params(params_path)
    manifest = load_json(manifest_path or params.report.manifest)
    problems = verify_manifest(manifest, os.environ.get(PUBKEY_ENV))
    chain = verify_chain(params.gate.audit_log)
    problems += chain
    if not chain:
        problems += disagreements(params, manifest, read_log(params.gate.audit_log))
    return problems


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 16 else text


def disagreements(params: Any, manifest: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    """Where the files, the audit log and the registry tell different stories about the last
    decision: one line per disagreement, naming both values."""
    from pipeline.common.registry import open_registry
    from pipeline.common.tracking import TAG
    from pipeline.report import load_json

    problems = []
    audit, decision_path = params.gate.audit_log, params.gate.decision
    manifests = [e for e in log if e.get("event") == "evidence_manifest"]
    if not manifests or manifests[-1].get("manifest_hash") != manifest.get("manifest_hash"):
        last = manifests[-1].get("manifest_hash") if manifests else None
        problems.append(
            f"{audit}: the last manifest it records is {_short(last)}, the manifest on disk is {_short(manifest.get('manifest_hash'))}"
        )
    if not Path(decision_path).is_file():
        return problems + [f"{decision_path}: missing (the decision the manifest rests on)"]
    decision = load_json(decision_path)
    on_disk = {"decision": decision.get("decision"), "policy_hash": (decision.get("policy") or {}).get("hash"),
               "evidence_hash": (decision.get("evidence") or {}).get("hash"), "version": (decision.get("registry") or {}).get("version")}  # fmt: skip
    decisions = [e for e in log if e.get("event") == "gate_decision"]
    logged = decisions[-1] if decisions else {}
    for key, value in on_disk.items():
        if logged.get(key) != value:
            problems.append(
                f"{audit}: its last gate decision has {key} {_short(logged.get(key))}, {decision_path} has {_short(value)}"
            )
    version = on_disk["version"]
    registry = open_registry(params.tracking) if version else None
    if registry is not None:
        tags = registry.get_version(str(version)).tags
        expected = {"decision": on_disk["decision"], "policy_hash": on_disk["policy_hash"], "evidence_hash": on_disk["evidence_hash"],
                    "manifest_hash": manifest.get("manifest_hash"), "audit_entry": logged.get("hash")}  # fmt: skip
        for key, value in expected.items():
            if tags.get(f"{TAG}{key}") != value:
                problems.append(f"registry {params.tracking.registered_model} v{version}: tag {TAG}{key} is {_short(tags.get(TAG + key))}, "
                                f"the files and audit log say {_short(value)}")  # fmt: skip
    return problems


def _cmd_verify(args: argparse.Namespace) -> int:
    problems = verify(args.params, args.manifest)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    import json

    from pipeline.common.params import load_params

    manifest = json.loads(Path(args.manifest or load_params(args.params).report.manifest).read_text(encoding="utf-8"))
    sig = manifest.get("signature") or {}
    signed = (
        f"signed (Ed25519, key {sig.get('public_key', '')[:16]}...)"
        if sig.get("signed")
        else "UNSIGNED (set GOVTUNE_SIGNING_KEY to sign)"
    )
    print(f"verify: ok - every artifact matches the manifest; the audit chain holds; the files, the audit log and the registry "
          f"agree on the last decision; the manifest is {signed}")  # fmt: skip
    return 0


def lineage(version: str | None, params_path: Path) -> list[str]:
    """The chain from a registered version (default: the champion) back to the raw data."""
    from pipeline.common.params import load_params
    from pipeline.common.policy import load_promotion_policy
    from pipeline.common.registry import open_registry
    from pipeline.common.tracking import TAG

    params = load_params(params_path)
    registry = open_registry(params.tracking)
    if registry is None:
        raise GovtuneError(
            "params.yaml: tracking.enabled",
            "tracking is disabled: no registry",
            "enable tracking and re-run `dvc repro`",
        )
    if version is None:
        alias = load_promotion_policy(params.gate.promotion_policy).alias
        mv = registry.version_by_alias(alias)
        if mv is None:
            raise GovtuneError(
                f"registry {registry.name}", f"no version holds the alias {alias!r}", "pass --version, or promote one"
            )
    else:
        mv = registry.get_version(version)
    tags = mv.tags
    head = (f"model {registry.name} v{mv.version}: {tags.get(f'{TAG}decision')} (policy {tags.get(f'{TAG}policy_hash', '')[:12]}, "
            f"evidence {tags.get(f'{TAG}evidence_hash', '')[:12]}), report {tags.get(f'{TAG}compliance_report', 'n/a')}")  # fmt: skip
    lines = [head]
    run = registry.client.get_run(mv.run_id)
    lines.append(
        f"  <- trained by run {run.info.run_id} ({run.info.run_name}, git {run.data.tags.get(f'{TAG}git_commit', '')[:10]})"
    )
    for ds in run.inputs.dataset_inputs:
        lines.append(f"  <- dataset {ds.dataset.name}: digest {ds.dataset.digest} ({ds.dataset.source})")
    base = run.data.params.get("base_model.id")
    lines.append(f"  <- base model {base} sha256 {run.data.params.get('base_model.sha256', '')}")
    exp = registry.client.get_experiment_by_name(params.tracking.experiment)
    train = next((ds.dataset for ds in run.inputs.dataset_inputs if ds.dataset.name == "train"), None)
    # Walk back by digest: the split run that wrote this train set, the scrub run that wrote its
    # input (the split run's dep md5), the validate run that checked the raw data scrub read.
    hops = [
        ("split", "train", f"{TAG}dep.{params.scrub.out}"),
        ("scrub", "scrubbed", f"{TAG}dep.{params.data.raw}"),
        ("validate", "raw", None),
    ]
    digest = train.digest if train else None
    for stage, name, dep_tag in hops:
        producer = _run_with_dataset(registry.client, exp.experiment_id, stage, name, digest) if digest else None
        if producer is None:
            lines.append(f"  <- {stage}: no run found that logged {name} with digest {digest}")
            break
        lines.append(f"  <- {stage} run {producer.info.run_id} logged {name}: digest {digest}")
        digest = producer.data.tags.get(dep_tag) if dep_tag else None
    return lines


def _run_with_dataset(client: object, experiment_id: str, stage: str, name: str, digest: str) -> object | None:
    """The latest run of ``stage`` that logged dataset ``name`` with this digest."""
    from pipeline.common.tracking import TAG

    runs = client.search_runs(
        [experiment_id], f"tags.`{TAG}stage` = '{stage}'", order_by=["attributes.start_time DESC"], max_results=100
    )
    return next(
        (
            r
            for r in runs
            if any(d.dataset.name == name and d.dataset.digest == digest for d in r.inputs.dataset_inputs)
        ),
        None,
    )


def _cmd_lineage(args: argparse.Namespace) -> int:
    print("\n".join(lineage(args.version, args.params)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import webbrowser

    from pipeline.common.params import load_params

    path = load_params(args.params).report.html
    if not path.is_file():
        raise GovtuneError(str(path), "no compliance report yet", "run `dvc repro`")
    print(path.resolve())
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


REJUDGE = ["dvc", "repro", "--force", "--single-item", "gate", "report"]


def _cmd_rejudge(args: argparse.Namespace) -> int:
    """The gate and report stages again on the same evidence: today's date (an expired waiver),
    the registry's champion, new approvals. Nothing upstream re-runs, so the same weights keep
    the same registered version."""
    import subprocess

    print("$ " + " ".join(REJUDGE), file=sys.stderr)
    return subprocess.run(REJUDGE, check=False).returncode


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from pipeline import synthesize

    synthesize.main(args.rest)
    return 0


def _cmd_curve(args: argparse.Namespace) -> int:
    from pipeline import data_efficiency

    return data_efficiency.run_command(args)


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser (cheap: no heavy imports)."""
    parser = argparse.ArgumentParser(prog="govtune", description="Governance-first fine-tuning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    policy = sub.add_parser("policy", help="work with the rules in policies/")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    lint = policy_sub.add_parser("lint", help="validate params.yaml and every policy file (unknown keys rejected)")
    lint.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    lint.set_defaults(func=_cmd_policy_lint)
    schema = policy_sub.add_parser("schema", help="export JSON Schema of every policy file (for editor validation)")
    schema.add_argument("--out", type=Path, default=Path("policies/schemas"), help="folder (default: policies/schemas)")
    schema.set_defaults(func=_cmd_policy_schema)
    approve = sub.add_parser(
        "approve", help="record a human approval of a registered model version (see policies/promotion.yaml)"
    )
    approve.add_argument(
        "--version", required=True, help="model version number in the registry (see reports/gate_decision.json)"
    )
    approve.add_argument("--approver", required=True, help="who approves (name as in your org's records)")
    approve.add_argument(
        "--role", required=True, help="role the approval is given in; must be one promotion.yaml requires"
    )
    approve.add_argument("--comment", default="", help="why, or under which conditions")
    approve.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    approve.set_defaults(func=_cmd_approve)
    mon = sub.add_parser(
        "monitor", help="drift of a new batch against the champion's training data (policies/monitoring.yaml)"
    )
    mon.add_argument(
        "batch", type=Path, help="tickets in the raw format (JSON Lines), e.g. data/raw/incoming/batch1/tickets.jsonl"
    )
    mon.add_argument(
        "--out", type=Path, default=None, help="report folder (default: reports/monitoring/<batch folder name>)"
    )
    mon.add_argument("--policy", type=Path, default=None, help="monitoring rules (default: params.yaml monitor.policy)")
    mon.add_argument(
        "--accept", action="store_true", help="append the (reviewed) batch to the raw data for retraining instead"
    )
    mon.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    mon.set_defaults(func=_cmd_monitor)
    fgt = sub.add_parser(
        "forget", help="right to erasure: remove a data subject, record it, flag the models trained on it"
    )
    fgt.add_argument(
        "--customer-id", required=True, help="the subject's id as it appears in the raw data's customer_id column"
    )
    fgt.add_argument("--requested-by", default="data subject", help="who asked (recorded in the audit log)")
    fgt.add_argument("--reason", default="GDPR Art. 17 request", help="legal basis or ticket reference (recorded)")
    fgt.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    fgt.set_defaults(func=_cmd_forget)
    ver = sub.add_parser(
        "verify", help="re-hash every artifact of the evidence manifest, check its signature and the audit chain"
    )
    ver.add_argument("--manifest", type=Path, default=None, help="manifest (default: params.yaml report.manifest)")
    ver.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    ver.set_defaults(func=_cmd_verify)
    lin = sub.add_parser("lineage", help="print the chain from a registered model version back to the raw data")
    lin.add_argument("version", nargs="?", default=None, help="model version (default: the champion)")
    lin.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    lin.set_defaults(func=_cmd_lineage)
    rep = sub.add_parser("report", help="print the path of the latest compliance report")
    rep.add_argument("--open", action="store_true", help="open it in the default browser")
    rep.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    rep.set_defaults(func=_cmd_report)
    rej = sub.add_parser(
        "rejudge",
        help="re-run only gate and report on the same evidence (after a waiver expires, an approval, a new champion)",
    )
    rej.set_defaults(func=_cmd_rejudge)
    synth = sub.add_parser("synthesize", help="write the demo dataset (see python -m pipeline.synthesize --help)")
    synth.add_argument("rest", nargs=argparse.REMAINDER)
    synth.set_defaults(func=_cmd_synthesize)
    from pipeline.data_efficiency import add_arguments

    curve = sub.add_parser(
        "curve", help="data-efficiency curve: fine-tune on nested fractions of the train split, evaluate each one"
    )
    add_arguments(curve)
    curve.set_defaults(func=_cmd_curve)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``govtune`` console script."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except GovtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except BrokenPipeError:  # `govtune lineage | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
