"""``govtune curve``: nested fractions, one real fine-tune and evaluation per point, the report's view."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.data_efficiency import nested_fractions, smallest_reaching
from tests.conftest import read_json, run_cmd, write_yaml


def test_fractions_are_nested_and_independent_of_the_files_order():
    records = [{"ticket_id": f"T{i:04d}"} for i in range(200)]
    subsets = nested_fractions(records, [0.1, 0.5, 1.0], salt="7")
    assert [len(subsets[f]) for f in (0.1, 0.5, 1.0)] == [20, 100, 200]
    ids = {f: [r["ticket_id"] for r in s] for f, s in subsets.items()}
    assert ids[0.5][:20] == ids[0.1] and ids[1.0][:100] == ids[0.5]
    assert nested_fractions(records[::-1], [0.1], salt="7")[0.1] == subsets[0.1]
    assert nested_fractions(records, [0.1], salt="8")[0.1] != subsets[0.1]  # the salt decides the order


def test_the_smallest_fraction_reaching_95_percent():
    points = [{"fraction": f, "examples": int(f * 100), "quality": {"category_accuracy": a}}
              for f, a in ((0.1, 0.5), (0.25, 0.86), (0.5, 0.9), (1.0, 0.9))]  # fmt: skip
    assert smallest_reaching(points, "category_accuracy")["fraction"] == 0.25  # 0.86 >= 0.855
    points[1]["quality"]["category_accuracy"] = 0.85
    assert smallest_reaching(points, "category_accuracy")["fraction"] == 0.5


@pytest.mark.slow
def test_the_curve_on_the_tiny_profile_comes_from_real_runs(tiny_built, tmp_path):
    project = tiny_built.clone(tmp_path / "project")
    # Scoring under bf16 CPU autocast, as on a CPU with native bf16: training must still move the
    # adapter (an autocast around the training loop kept the first bf16 copy of the LoRA weights).
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["precision"] = "bf16"
    write_yaml(project / "params.yaml", params)
    keep = tmp_path / "adapters"
    proc = run_cmd(["govtune", "curve", "--fractions", "0.25", "0.5", "1.0", "--steps", "2", "--test-examples", "24",
                    "--keep-adapters", str(keep)], cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    curve = read_json(project / "reports" / "data_efficiency.json")
    assert [p["fraction"] for p in curve["points"]] == [0.25, 0.5, 1.0] and curve["base"]["examples"] == 0
    sizes = [p["examples"] for p in curve["points"]]
    assert sizes == sorted(sizes) and sizes[-1] == curve["inputs"]["train_examples"]
    assert all(p["steps"] == 2 and p["n"] == 24 for p in curve["points"])
    assert all(p["val_loss_final"] != p["val_loss_start"] for p in curve["points"])  # each fine-tune changed the model
    assert curve["settings"]["steps_per_fraction"] == 2 and curve["settings"]["pipeline_steps"] != 2
    assert (project / "reports" / "data_efficiency.png").read_bytes()[:4] == b"\x89PNG"

    # Each point's figure is the evaluate code's on that point's adapter: re-score the kept adapter.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.common.io import sha256_file
    from pipeline.common.params import load_params
    from pipeline.common.scorer import Scorer, precision_context

    point = curve["points"][1]
    adapter = keep / "adapter-0.5"
    assert sha256_file(adapter / "adapter_model.safetensors") == point["adapter_sha256"]
    base_dir = project / "models" / "base"
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True), adapter
    ).eval()
    test = [json.loads(line) for line in (project / "data" / "splits" / "test.jsonl").read_text().splitlines()][:24]
    with precision_context(load_params(project / "params.yaml").evaluate):  # bf16, as the curve scored it
        preds = Scorer(model, tokenizer, 32).classify_batch([t["message"] for t in test], 8)
    accuracy = sum(p["category"] == t["category"] for p, t in zip(preds, test, strict=True)) / len(test)
    assert accuracy == pytest.approx(point["quality"]["category_accuracy"], abs=1e-4)

    # The report shows it, and says when it is stale.
    assert run_cmd(["dvc", "repro", "-f", "-s", "report"], cwd=project).returncode in (
        0,
        1,
    )  # the tiny model is REJECTED
    html = (project / "reports" / "compliance_report.html").read_text()
    assert (
        "How much data the fine-tune needs" in html and 'alt="data_efficiency"' in html and "<b>Stale</b>" not in html
    )
    train = project / "data" / "splits" / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines()[0] + "\n")
    assert run_cmd(["dvc", "repro", "-f", "-s", "report"], cwd=project).returncode in (0, 1)
    assert "<b>Stale</b>: the train split changed" in (project / "reports" / "compliance_report.html").read_text()
