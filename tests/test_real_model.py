"""The evaluation detects what it claims to detect, on a model that can learn.

The tiny random Llama of the other tests learns nothing, so these tests fine-tune the real base
model (SmolLM2-135M-Instruct from its hash-pinned package) on small data: minutes each on two
CPU cores, end to end through `dvc repro`. Memorisation: many epochs over a tiny training set
raise canary exposure far above one pass over it. Injected label bias: a model fine-tuned on
data whose labels disadvantage one group is measured as biased (parity gap, counterfactual
flips) where the same fine-tune on unbiased data is not, and the gate rejects it while the
champion stays where it was.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_real_project, read_json, run_cmd, write_yaml

pytestmark = pytest.mark.slow

SMALL_EVAL = {"generate_examples": 2, "regurgitation_examples": 2, "max_new_tokens": 24, "loss_examples": 8}


def set_params(project: Path, section: str, **values: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section].update(values)
    write_yaml(project / "params.yaml", params)


def max_exposure(project: Path) -> tuple[float, float]:
    """(fine-tuned, base) maximum canary exposure, in bits."""
    evaluation = read_json(project / "reports" / "evaluation.json")
    return tuple(evaluation[m]["privacy"]["canary_exposure_max"]["value"] for m in ("finetuned", "base"))


def test_canary_exposure_rises_with_memorisation(tmp_path):
    """One pass over a tiny set vs many epochs over it: the exposure metric sees the difference."""
    finetune = {"max_steps": 14, "batch_size": 4, "grad_accum": 1, "eval_interval": 100, "eval_max_examples": 8,
                "checkpoint_interval": 0, "warmup_steps": 3, "max_seq_len": 256, "learning_rate": 0.003}  # fmt: skip
    project = make_real_project(tmp_path / "p", rows=60, finetune=finetune, evaluate=SMALL_EVAL)
    run_cmd(["dvc", "repro", "evaluate"], cwd=project, check=True, timeout=1800)
    train_examples = sum(1 for _ in (project / "data" / "splits" / "train.jsonl").open())
    one_pass, base = max_exposure(project)
    set_params(project, "finetune", max_steps=60)  # ~ 4.5 epochs over the same ~54 examples
    rerun = run_cmd(["dvc", "repro", "evaluate"], cwd=project, check=True, timeout=1800)
    assert "Running stage 'split'" not in rerun.stdout  # same data, same canaries
    memorised, base_again = max_exposure(project)
    candidates = read_json(project / "reports" / "evaluation.json")["finetuned"]["privacy"]["canaries"][0]["candidates"]
    ceiling = math.log2(candidates)
    print(
        f"train examples {train_examples}; exposure base {base:.2f}, one pass {one_pass:.2f}, many epochs {memorised:.2f} (max {ceiling:.2f})"
    )
    assert base_again == base
    assert memorised >= one_pass + 2.0 and memorised >= base + 2.0
    assert memorised >= ceiling - 1.5  # at most ~3 of 101 candidates rank above a secret


# The label-bias fine-tune. The short CPU fine-tune of the default run barely learns the
# priority (1 token of ~65 answer tokens), and a model that has not learned a label cannot learn
# a bias on it; weighting the category and priority tokens (`finetune.label_weight`) makes the
# priority learnable in this budget. Both runs below use the same settings.
BIAS_FINETUNE = {"max_steps": 120, "batch_size": 4, "grad_accum": 1, "warmup_steps": 6, "learning_rate": 0.005,
                 "label_weight": 100.0, "max_seq_len": 256, "eval_interval": 1000, "eval_max_examples": 8,
                 "checkpoint_interval": 0}  # fmt: skip
BIAS_EVAL = SMALL_EVAL | {"canary_candidates": 20}
FAIRNESS_RULES = {"demographic_parity_gap", "demographic_parity_not_worse_than_base", "counterfactual_priority_flips"}


def gender_bias(project: Path) -> dict[str, float]:
    """The fine-tuned model's gender parity gap and counterfactual priority flip rate."""
    evaluation = read_json(project / "reports" / "evaluation.json")["finetuned"]
    return {"dpd": evaluation["fairness"]["gender"]["demographic_parity_difference"]["value"],
            "dpd_ci_low": evaluation["fairness"]["gender"]["demographic_parity_difference"]["ci95"][0],
            "flips": evaluation["counterfactual"]["gender"]["cf_priority_flip_rate"]["value"],
            "priority_accuracy": evaluation["quality"]["priority_accuracy"]["value"]}  # fmt: skip


def test_injected_label_bias_is_measured_and_rejected(tmp_path):
    """Same fine-tune on unbiased and on gender-biased labels: only the second is biased and rejected."""
    project = make_real_project(tmp_path / "p", rows=600, finetune=BIAS_FINETUNE, evaluate=BIAS_EVAL, min_group_size=20)
    set_params(project, "split", train=0.7, val=0.05)  # a larger test split (~150): steadier group rates
    run_cmd(["dvc", "repro"], cwd=project, check=True, timeout=2400)
    fair, fair_decision = gender_bias(project), read_json(project / "reports" / "gate_decision.json")
    assert not set(fair_decision["failing_rules"]) & FAIRNESS_RULES, fair_decision["summary"]
    champion = fair_decision["registry"]["champion_after"]

    # Same seed and rows, labels biased: female tickets' priority always lowered to `low`.
    run_cmd(["python", "-m", "pipeline.synthesize", "--rows", "600", "--bias-strength", "1", "--bias-levels", "3"], cwd=project, check=True)
    run_cmd(["dvc", "repro"], cwd=project, check=True, timeout=2400)
    biased, decision = gender_bias(project), read_json(project / "reports" / "gate_decision.json")
    print(f"unbiased {fair} -> {fair_decision['decision']}; biased {biased} -> {decision['summary']}")
    assert biased["dpd"] >= fair["dpd"] + 0.15 and biased["dpd_ci_low"] > fair["dpd"]
    assert biased["flips"] >= fair["flips"] + 0.2
    assert decision["decision"] == "REJECTED"
    assert {"demographic_parity_gap", "counterfactual_priority_flips"} <= set(decision["failing_rules"]), decision["summary"]
    assert decision["registry"]["champion_after"] == champion  # the alias did not move
