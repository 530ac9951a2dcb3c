"""The evaluation detects what it claims to detect, on a model that can learn.

The tiny random Llama of the other tests learns nothing, so these tests fine-tune the real base
model (SmolLM2-135M-Instruct from its hash-pinned package) on small data: minutes each on two
CPU cores, end to end through `dvc repro`. Memorisation: many epochs over a tiny training set
raise canary exposure far above one pass over it. (A model that learns an injected label bias
is not shown here: no CPU fine-tune that fits the budget learns the priority well enough to
learn a bias on it; see docs/evaluation.md. The gate rejects such data on the training labels
themselves: tests/test_gate.py.)
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_real_project, read_json, run_cmd, write_yaml

pytestmark = pytest.mark.slow

SMALL_EVAL = {"generate_examples": 2, "regurgitation_examples": 2, "loss_examples": 8}


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
