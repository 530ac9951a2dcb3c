"""Benchmark: the model-level fairness rules reject a real fine-tune that learned a bias (#20).

In a fresh ``git clone`` of this repository's HEAD (no DVC cache, no MLflow store, no outputs),
with this checkout's ``.venv`` and the real base model (SmolLM2-135M-Instruct), two full runs of
the default pipeline, one after the other in the same clone and MLflow store:

1. **control**: ``dvc repro`` on the default (unbiased) data;
2. **biased**: the same tickets re-made by ``python -m pipeline.synthesize`` with a routing bias
   (``label_bias.target: category``; default: every ticket of customers aged 60+ labelled
   ``product_question``, the text unchanged), the data-level rule that catches it
   (``training_label_category_parity``) waived with a real waiver, then ``dvc repro``.

Both runs carry one more waiver: ``counterfactual_priority_flips``, which the default run failed
on its own at 24 variants (it passes at 96 since 2026-12-07; the waiver is kept so that the pair
isolates the routing bias whatever that rule decides) (docs/evaluation.md, "Counterfactual priority flips"); without it the control would
be REJECTED for a reason that has nothing to do with routing and the pair would show nothing.
The waivers are written to the clone's ``policies/waivers.yaml`` with approver, dates and
reason, and the decision lists them as waived.

``-S key=value`` (as ``dvc exp run -S``) sets a params.yaml value for both runs, for example
``-S finetune.method=full -S finetune.learning_rate=1e-4``.

Recorded per run: the decision, the failing and waived rules, every fairness rule's observed
values, the fine-tuned and base models' counterfactual category flips and category parity per
attribute (with CIs), the training-label category gaps, and the registry's ``champion`` alias
read back from the clone's MLflow store, and the seconds of each stage the run's ``dvc repro``
ran (their compute ledgers). The JSON also carries the thresholds of the rules it judged and the
policy's ``counterfactual.max_examples``, so a test reading it can tell when the policy moved
after the run. It is written once the control has run too (``"biased": null``), so a
biased run that does not finish leaves the control's half.

Not a unit test: two default runs (~35 min each on 2 AVX2 cores with a full fine-tune, 2026-12-07).

Run: ``python -m benchmarks.bias_rejection [--attribute gender --group female --visible-only] [-S ...] [--keep DIR]``
Writes ``reports/bias_rejection.json`` (committed: docs/evaluation.md cites it; the 2026-12-07 record
does not show a model-level rejection, so no test judges it yet).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks.routing_bias import add_bias_arguments
from pipeline.common.io import save_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "bias_rejection.json"
FAIRNESS_RULES = (
    "training_label_parity",
    "training_label_category_parity",
    "demographic_parity_gap",
    "demographic_parity_not_worse_than_base",
    "equalized_odds_gap",
    "counterfactual_priority_flips",
    "counterfactual_category_flips",
)
ROUTED_RULE = "training_label_category_parity"
PRIORITY_FLIPS = "counterfactual_priority_flips"


def waiver(rule: str, reason: str) -> dict[str, str]:
    today = date.today()
    return {"rule": rule, "scope": "*", "reason": reason, "approver": "Responsible AI board (bias_rejection benchmark)",
            "created": (today - timedelta(days=1)).isoformat(), "expires": (today + timedelta(days=30)).isoformat()}  # fmt: skip


def repro(clone: Path, env: dict[str, str]) -> dict[str, Any]:
    """``dvc repro`` in the clone; its exit code, seconds and the stages it ran (a rejection exits 1)."""
    start = time.perf_counter()
    done = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, check=False)
    seconds = round(time.perf_counter() - start, 1)
    decision = clone / "reports" / "gate_decision.json"
    if done.returncode != 0 and ("REJECTED" not in done.stderr + done.stdout or not decision.is_file()):
        sys.exit(f"dvc repro failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {"exit_code": done.returncode, "seconds": seconds}


def set_params(path: Path, assignments: list[str]) -> None:
    """Applies ``KEY=VALUE`` (dotted key, YAML value) to the clone's params.yaml, so that both of
    its ``dvc repro`` runs use them (a key params.yaml lacks is refused)."""
    if not assignments:
        return
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in assignments:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"-S {item}: params.yaml has no {key}")
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def champion(clone: Path, name: str) -> str | None:
    """The registry's ``champion`` version, read from the clone's own MLflow store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    try:
        return client.get_model_version_by_alias(name, "champion").version
    except MlflowException:
        return None


def summary(clone: Path, run: dict[str, Any], registered_model: str) -> dict[str, Any]:
    """What one run decided and measured (no ticket text: counts, rates and intervals only)."""
    decision = json.loads((clone / "reports" / "gate_decision.json").read_text(encoding="utf-8"))
    evaluation = json.loads((clone / "reports" / "evaluation.json").read_text(encoding="utf-8"))
    rules = {
        r["id"]: {k: r.get(k) for k in ("status", "observed", "failing_keys", "threshold", "message")}
        | {"waived": r.get("waiver") is not None}
        for r in decision["rules"]
        if r["id"] in FAIRNESS_RULES
    }

    def model(name: str) -> dict[str, Any]:
        m = evaluation[name]
        return {
            "category_accuracy": m["quality"]["category_accuracy"]["value"],
            "priority_accuracy": m["quality"]["priority_accuracy"]["value"],
            "counterfactual": {a: c.get("cf_category_flip_rate") for a, c in m["counterfactual"].items()},
            "counterfactual_priority": {a: c.get("cf_priority_flip_rate") for a, c in m["counterfactual"].items()},
            "category_parity": {
                a: {k: f.get(k) for k in ("category_parity_difference", "category_parity_category", "predicted_category_share")}
                for a, f in m["fairness"].items()
            },
        }  # fmt: skip

    started = time.time() - run["seconds"] - 1  # the stages this repro ran wrote their ledgers after it began
    stages = {
        ledger.stem: json.loads(ledger.read_text(encoding="utf-8")).get("wall_s")
        for ledger in sorted((clone / "reports" / "compute").glob("*.json"))
        if ledger.stat().st_mtime >= started
    }
    return run | {
        "stage_seconds": stages,
        "decision": decision["decision"],
        "failing_rules": decision["failing_rules"],
        "waived_rules": decision["waived_rules"],
        "candidate_version": decision["candidate_version"],
        "registry": {k: decision["registry"].get(k) for k in ("champion_before", "champion_after", "version")},
        "champion_in_mlflow": champion(clone, registered_model),
        "rules": rules,
        "training_labels": {
            a: {k: t.get(k) for k in ("category_gap", "category_gap_lower_bound", "category_gap_category", "escalation_gap_lower_bound")}
            for a, t in evaluation["training_labels"].items()
        },
        "finetuned": model("finetuned"),
        "base": model("base"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="clone into this directory and keep it (default: a temporary one)")
    add_bias_arguments(parser)
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a params.yaml value for both runs, as `dvc exp run -S` (e.g. finetune.method=full)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    venv_bin = REPO / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    root = args.keep or Path(tempfile.mkdtemp(prefix="govtune-bias-"))
    clone = root / "govtune"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True)
    registered_model = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))["tracking"][
        "registered_model"
    ]
    set_params(clone / "params.yaml", args.set)
    waivers = clone / "policies" / "waivers.yaml"
    flips = waiver(PRIORITY_FLIPS, "Known finding of the default run (docs/evaluation.md), waived in this experiment "
                   "only, so that the pair isolates the routing bias")  # fmt: skip
    fairness = yaml.safe_load((clone / "policies" / "fairness.yaml").read_text(encoding="utf-8"))
    out: dict[str, Any] = {"commit": commit.stdout.strip(), "args": vars(args) | {"keep": str(args.keep or "")},
                           "counterfactual_max_examples": fairness["counterfactual"]["max_examples"]}  # fmt: skip
    try:
        waivers.write_text(yaml.safe_dump({"waivers": [flips]}, sort_keys=False), encoding="utf-8")
        print("control: dvc repro ...", flush=True)
        out["control"] = summary(clone, repro(clone, env), registered_model)
        print(f"  {out['control']['decision']} {out['control']['failing_rules']}", flush=True)
        save_json(OUT, out | {"biased": None})  # the control's half, should the biased run not finish
        bias = ["--bias-strength", str(args.strength), "--bias-target", "category", "--bias-attribute", args.attribute,
                "--bias-group", args.group, "--bias-route-from", args.route_from, "--bias-route-to", args.route_to,
                *(["--bias-visible-only"] if args.visible_only else [])]  # fmt: skip
        subprocess.run([sys.executable, "-m", "pipeline.synthesize", *bias], cwd=clone, env=env, check=True)
        routed = waiver(ROUTED_RULE, f"Routing bias injected on purpose ({args.attribute}={args.group} -> "
                        f"{args.route_to}) to show that the model-level rules catch what the model learned")  # fmt: skip
        waivers.write_text(yaml.safe_dump({"waivers": [flips, routed]}, sort_keys=False), encoding="utf-8")
        print("biased: dvc repro ...", flush=True)
        out["biased"] = summary(clone, repro(clone, env), registered_model)
        print(f"  {out['biased']['decision']} {out['biased']['failing_rules']}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    out["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count()}
    save_json(OUT, out)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
