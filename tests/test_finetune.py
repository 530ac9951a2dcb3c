"""Tests of the finetune stage: batching, task format, resume after a crash, DDP, FSDP, lineage."""

from __future__ import annotations

import hashlib
import json
import re
import signal

import pytest
import yaml

from pipeline.common.task import encode_example, format_answer, label_token_count, parse_answer
from pipeline.common.training import Example, answer_loss, collate, encode_records
from pipeline.finetune import Dist, epoch_batches, run_fingerprint, total_steps, train, trained_weights
from pipeline.report import STAGES
from tests.conftest import REPO, TINY_FINETUNE, VENV_BIN, make_tiny_project, read_json, run_cmd, write_yaml


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model):  # its tests share (and reset) it: one xdist group
    """A tiny project with every stage up to split done (shared by the tests below)."""
    project = make_tiny_project(tmp_path_factory.mktemp("ft") / "p", tiny_model)
    run_cmd(["dvc", "repro", "split", "base_model"], cwd=project, check=True)
    return project


def test_epoch_batches_cover_each_example_once_and_group_lengths():
    lengths = [(i * 37) % 200 + 10 for i in range(400)]
    batches = epoch_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(400))
    assert epoch_batches(lengths, 8, seed=1, epoch=0) == batches
    assert epoch_batches(lengths, 8, seed=1, epoch=1) != batches

    def waste(bs):
        padded = sum(max(lengths[i] for i in b) * len(b) for b in bs)
        return 1 - sum(lengths) / padded

    import random

    order = list(range(400))
    random.Random(0).shuffle(order)
    unsorted = [order[i : i + 8] for i in range(0, 400, 8)]
    assert waste(batches) < waste(unsorted) / 3


def test_collate_pads_right_and_masks_labels():
    batch = collate([Example([5, 6, 7], [-100, 6, 7]), Example([5], [5])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collate_weights_the_label_tokens_only_when_asked():
    examples = [Example([5, 6, 7, 8], [-100, 6, 7, 8], label_tokens=2), Example([5, 6], [-100, 6], label_tokens=1)]
    assert "loss_weights" not in collate(examples, pad_id=0)
    weights = collate(examples, pad_id=0, label_weight=4.0)["loss_weights"]
    assert weights.tolist() == [[0.0, 4.0, 4.0, 1.0], [0.0, 4.0, 0.0, 0.0]]


class _FixedLogits:
    """A stand-in model returning fixed logits (for checking the loss arithmetic)."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, input_ids, attention_mask, logits_to_keep):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits[:, -logits_to_keep:])


def test_answer_loss_is_a_weighted_mean_when_weighted():
    import torch

    torch.manual_seed(0)
    examples = [
        Example([1, 2, 3, 4], [-100, 2, 3, 4], label_tokens=1),
        Example([1, 2, 3], [-100, 2, 3], label_tokens=2),
    ]
    model = _FixedLogits(torch.randn(2, 4, 6))
    plain_sum, plain_n = answer_loss(model, collate(examples, pad_id=0))
    weighted_sum, weighted_n = answer_loss(model, collate(examples, pad_id=0, label_weight=3.0))
    logp = torch.log_softmax(model.logits[:, :-1], dim=-1)
    ce = {
        (0, 1): -logp[0, 0, 2],
        (0, 2): -logp[0, 1, 3],
        (0, 3): -logp[0, 2, 4],
        (1, 1): -logp[1, 0, 2],
        (1, 2): -logp[1, 1, 3],
    }
    assert plain_n == 5 and float(plain_sum) == pytest.approx(float(sum(ce.values())), rel=1e-5)
    expected = 3 * ce[0, 1] + ce[0, 2] + ce[0, 3] + 3 * ce[1, 1] + 3 * ce[1, 2]
    assert weighted_n == pytest.approx(11.0) and float(weighted_sum) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "category: billing\npriority: high\nreply: Done.",
            {"category": "billing", "priority": "high", "reply": "Done."},
        ),
        (
            "  category: refund \n priority: low\nreply: We refunded\nyou.",
            {"category": "refund", "priority": "low", "reply": "We refunded\nyou."},
        ),
        ("category: billing\nreply: missing priority", None),
        ("I think this is billing.", None),
        ("", None),
    ],
)
def test_parse_answer_table(text, expected):
    assert parse_answer(text) == expected


def test_format_round_trips():
    assert parse_answer(format_answer("shipping", "urgent", "On its way.")) == {
        "category": "shipping",
        "priority": "urgent",
        "reply": "On its way.",
    }


def test_encode_masks_the_prompt(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model[0])
    ids, labels, cut = encode_example(
        tok, "My card was charged twice.", format_answer("billing", "high", "Refunded."), 512
    )
    answer = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert not cut and labels[0] == -100 and answer
    assert "category: billing" in tok.decode(answer)
    ids2, labels2, cut2 = encode_example(tok, "x " * 400, format_answer("billing", "high", "ok"), 64)
    assert cut2 and len(ids2) == 64 == len(labels2)


def test_examples_whose_prompt_fills_max_seq_len_are_counted_and_all_of_them_is_an_error(tiny_model, caplog):
    from transformers import AutoTokenizer

    from pipeline.common.errors import GovtuneError
    from pipeline.finetune import check_answer_tokens

    tok = AutoTokenizer.from_pretrained(tiny_model[0])
    short = {"message": "My card was charged twice.", "category": "billing", "priority": "high", "reply": "Refunded."}
    long = short | {"message": "My card was charged twice. " * 40}
    (whole,), _ = encode_records(tok, [short], 512)
    max_len = whole.labels.count(-100) + 4  # the short prompt and 4 answer tokens
    examples, _ = encode_records(tok, [short, long, long], max_len)
    assert len(examples[1].input_ids) == max_len and all(label == -100 for label in examples[1].labels)
    with caplog.at_level("WARNING", logger="pipeline.finetune"):
        assert check_answer_tokens(examples, max_len) == 2
    assert "2 of 3 training examples have no answer token" in caplog.text
    assert check_answer_tokens(examples[:1], max_len) == 0
    with pytest.raises(GovtuneError, match="finetune.max_seq_len"):
        check_answer_tokens(examples[1:], max_len)


@pytest.mark.parametrize(
    "category,priority", [("billing", "high"), ("product_question", "urgent"), ("account_access", "low")]
)
def test_label_tokens_are_the_category_and_priority_lines(tiny_model, category, priority):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model[0])
    record = {
        "message": "My card was charged twice.",
        "category": category,
        "priority": priority,
        "reply": "Refunded, sorry.",
    }
    ids, labels, _ = encode_example(tok, record["message"], format_answer(category, priority, record["reply"]), 512)
    n = label_token_count(tok, record["message"], category, priority, ids, labels)
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert tok.decode(ids[first : first + n]).strip() == f"category: {category}\npriority: {priority}"
    assert "reply" in tok.decode(ids[first + n :])
    (counted,), _ = encode_records(tok, [record], 512, count_labels=True)
    (uncounted,), _ = encode_records(tok, [record], 512)
    assert counted.label_tokens == n and uncounted.label_tokens == 0 and counted.input_ids == ids


def test_steps_and_fingerprint():
    from pipeline.common.params import load_params

    cfg = load_params(REPO / "params.yaml").finetune
    assert total_steps(cfg.model_copy(update={"max_steps": 0, "epochs": 2}), 100, 1) == 25
    assert total_steps(cfg.model_copy(update={"max_steps": 0, "epochs": 2}), 100, 2) == 13
    base = run_fingerprint(cfg, "a", "b", 1)
    assert base == run_fingerprint(cfg, "a", "b", 1)
    assert base != run_fingerprint(cfg.model_copy(update={"learning_rate": 0.1}), "a", "b", 1)
    assert base != run_fingerprint(cfg, "a", "c", 1) != run_fingerprint(cfg, "a", "b", 2)
    # share_prefix off is the training that came before the key: its checkpoints still resume
    legacy = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "share_prefix"}
    blob = json.dumps({"cfg": legacy, "base": "a", "train": "b", "world": 1}, sort_keys=True)
    assert not cfg.share_prefix and base == hashlib.sha256(blob.encode()).hexdigest()
    assert base != run_fingerprint(cfg.model_copy(update={"share_prefix": True}), "a", "b", 1)


def test_a_shared_prefix_in_distributed_training_is_refused():
    from pipeline.common.errors import GovtuneError
    from pipeline.common.params import load_params

    cfg = load_params(REPO / "params.yaml").finetune.model_copy(update={"share_prefix": True})
    with pytest.raises(GovtuneError, match="finetune.share_prefix") as err:
        train(cfg, REPO / "models" / "no-such-base", [], [], "fingerprint", Dist(rank=0, world=2))
    assert "share_prefix: false" in str(err.value)


def test_training_inside_an_autocast_context_is_refused():
    import torch

    from pipeline.common.errors import GovtuneError
    from pipeline.common.params import load_params
    from pipeline.finetune import Dist, train

    cfg = load_params(REPO / "params.yaml").finetune
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(GovtuneError, match="autocast"):
        train(cfg, REPO / "models" / "no-such-base", [], [], "fingerprint", Dist())


def test_counterfactual_augmentation_follows_its_param_and_names_its_policy():
    from pipeline.common.io import sha256_file
    from pipeline.common.params import load_params
    from pipeline.finetune import with_counterfactuals

    params = load_params(REPO / "params.yaml")
    records = [{"ticket_id": "T1", "message": "My wife is locked out.", "reply": "r", "category": "account_access",
                "priority": "high"}, {"ticket_id": "T2", "message": "No signal here.", "reply": "r",
                "category": "billing", "priority": "low"}]  # fmt: skip
    assert with_counterfactuals(params, records) == (records, {})  # off by default
    on = params.model_copy(
        update={"finetune": params.finetune.model_copy(update={"counterfactual_augmentation": True})}
    )
    augmented, info = with_counterfactuals(on, records)
    assert [r["message"] for r in augmented] == [
        "My wife is locked out.",
        "No signal here.",
        "My husband is locked out.",
    ]
    assert info["added"] == {"gender": 1, "age_band": 0}
    assert info["policy_sha256"] == sha256_file(params.evaluate.fairness_policy)


def _run_with(cmd, project, env=None):
    import os

    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        return run_cmd(cmd, cwd=project)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _finetune(project, env=None):
    return _run_with([str(VENV_BIN / "python"), "-m", "pipeline.finetune"], project, env)


def _reset(project):
    import shutil

    for path in ("models/adapter", "models/checkpoints"):
        shutil.rmtree(project / path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.xdist_group("finetune_prepared")
def test_killed_run_resumes_to_the_same_adapter(prepared):
    _reset(prepared)
    straight = _finetune(prepared)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = (prepared / "models" / "adapter" / "adapter_model.safetensors").read_bytes()
    metrics = read_json(prepared / "reports" / "train_metrics.json")
    assert metrics["val_loss_final"] < metrics["val_loss_base"], "training did not lower the validation loss"

    _reset(prepared)
    killed = _finetune(prepared, {"GOVTUNE_FAULT_KILL_AFTER_STEP": "8"})
    assert killed.returncode == -signal.SIGKILL
    assert (prepared / "models" / "checkpoints" / "finetune" / "checkpoint.pt").is_file()
    assert not (prepared / "models" / "adapter").exists()
    resumed = _finetune(prepared)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "at step 8 of 12" in resumed.stderr
    assert (prepared / "models" / "adapter" / "adapter_model.safetensors").read_bytes() == expected


@pytest.mark.slow
@pytest.mark.xdist_group("finetune_prepared")
def test_checkpoint_of_other_params_is_ignored(prepared):
    _reset(prepared)
    assert _finetune(prepared, {"GOVTUNE_FAULT_KILL_AFTER_STEP": "4"}).returncode == -signal.SIGKILL
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["finetune"]["learning_rate"] = 0.005
    write_yaml(prepared / "params.yaml", params)
    try:
        proc = _finetune(prepared)
        assert proc.returncode == 0 and "resuming from" not in proc.stderr
        assert "ignoring checkpoint" in proc.stderr
    finally:
        params["finetune"]["learning_rate"] = TINY_FINETUNE["learning_rate"]
        write_yaml(prepared / "params.yaml", params)


@pytest.mark.scale
@pytest.mark.slow
@pytest.mark.xdist_group("finetune_prepared")
def test_two_process_ddp_on_cpu(prepared):
    _reset(prepared)
    proc = run_cmd(
        [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "29533",
         "-m", "pipeline.finetune"],
        cwd=prepared,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_json(prepared / "reports" / "train_metrics.json")
    assert metrics["world_size"] == 2 and metrics["steps"] == TINY_FINETUNE["max_steps"]
    assert (prepared / "models" / "adapter" / "adapter_model.safetensors").is_file()


def _torchrun(project, port, env=None):
    cmd = [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
           str(port), "-m", "pipeline.finetune"]  # fmt: skip
    return _run_with(cmd, project, env)


def _adapter(project):
    from safetensors.torch import load_file

    folder = project / "models" / "adapter"
    return load_file(folder / "adapter_model.safetensors"), sorted(p.name for p in folder.iterdir())


def _assert_same_weights(got, expected, atol):
    assert got.keys() == expected.keys()
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    moved = max(float(v.abs().max()) for k, v in expected.items() if "lora_B" in k)
    assert moved > 100 * atol, "the adapter did not train, so equal weights would prove nothing"
    assert worst <= atol, f"largest difference {worst:.2e} > {atol:.0e}"


@pytest.mark.scale
@pytest.mark.slow
@pytest.mark.xdist_group("finetune_prepared")
def test_two_process_fsdp_trains_the_adapter_one_process_trains_and_resumes(prepared):
    """FSDP2 over 2 CPU processes (gloo; ``finetune.distributed: fsdp``) writes the adapter that
    one process writes when it takes both processes' micro-batches (grad_accum x 2; dropout off,
    so both do the same arithmetic), the same files and validation losses; and a run killed after
    a checkpoint (gathered from the shards) resumes under FSDP to the adapter of an unbroken run."""
    path = prepared / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    try:
        params["finetune"].update({"lora_dropout": 0.0, "grad_accum": 2})
        write_yaml(path, params)
        _reset(prepared)
        one = _finetune(prepared)
        assert one.returncode == 0, one.stderr[-2000:]
        expected, files = _adapter(prepared)
        one_metrics = read_json(prepared / "reports" / "train_metrics.json")

        params["finetune"].update({"grad_accum": 1, "distributed": "fsdp"})
        write_yaml(path, params)
        _reset(prepared)
        two = _torchrun(prepared, 29534)
        assert two.returncode == 0, two.stderr[-3000:]
        metrics = read_json(prepared / "reports" / "train_metrics.json")
        assert metrics["world_size"] == 2 and metrics["steps"] == one_metrics["steps"] == TINY_FINETUNE["max_steps"]
        assert metrics["trainable_parameters"] == one_metrics["trainable_parameters"]
        got, got_files = _adapter(prepared)
        assert got_files == files
        _assert_same_weights(got, expected, atol=1e-5)
        assert metrics["val_loss_final"] == pytest.approx(one_metrics["val_loss_final"], abs=1e-4)
        assert metrics["val_loss_final"] < metrics["val_loss_base"]

        _reset(prepared)
        killed = _torchrun(prepared, 29535, {"GOVTUNE_FAULT_KILL_AFTER_STEP": "8"})
        assert killed.returncode != 0
        assert (prepared / "models" / "checkpoints" / "finetune" / "checkpoint.pt").is_file()
        assert not (prepared / "models" / "adapter").exists()
        resumed = _torchrun(prepared, 29536)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from" in resumed.stderr and "at step 8 of 12" in resumed.stderr
        _assert_same_weights(_adapter(prepared)[0], got, atol=1e-6)
    finally:
        path.write_text(original)
        _reset(prepared)


@pytest.mark.slow
def test_lineage_walk_from_logged_model_to_dvc_lock(tmp_path, tiny_built, monkeypatch):
    """From the logged model to its run, its datasets and their digests: they equal dvc.lock."""
    import mlflow

    project = tiny_built.clone(tmp_path / "p")  # one full `dvc repro`
    assert "Running stage" not in run_cmd(["dvc", "repro", "finetune"], cwd=project, check=True).stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    # The producing stage's outs (stages not re-run here may still list older deps).
    md5 = {o["path"]: o["md5"] for name in ("scrub", "split") for o in lock[name]["outs"]}
    md5.update({d["path"]: d["md5"] for d in lock["validate"]["deps"]})
    assert {d["path"]: d["md5"] for d in lock["finetune"]["deps"]}["data/splits/train.jsonl"] == md5[
        "data/splits/train.jsonl"
    ]

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("govtune").experiment_id], "tags.`govtune.stage` = 'finetune'"
    )
    model_id = runs[0].data.tags["govtune.logged_model_id"]
    logged = client.get_logged_model(model_id)
    run = client.get_run(logged.source_run_id)
    assert run.info.run_name == "finetune" and run.data.tags["govtune.stage"] == "finetune"
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert digests == {"train": md5["data/splits/train.jsonl"], "val": md5["data/splits/val.jsonl"]}
    assert run.data.params["base_model.id"] == "tiny-llama"
    exec_id = run.data.tags["govtune.execution_id"]
    stages = client.search_runs([run.info.experiment_id], f"tags.`govtune.execution_id` = '{exec_id}'")
    by_stage = {r.data.tags["govtune.stage"]: r for r in stages}
    # Every stage of that one `dvc repro` that logs a run carries its execution id (monitor logs none without a batch).
    assert set(by_stage) == set(STAGES) - {"monitor"}
    split_digests = {d.dataset.name: d.dataset.digest for d in by_stage["split"].inputs.dataset_inputs}
    assert split_digests["test"] == md5["data/splits/test.jsonl"]
    raw = {d.dataset.name: d.dataset.digest for d in by_stage["validate"].inputs.dataset_inputs}
    assert raw["raw"] == md5["data/raw/tickets.jsonl"]
    scrubbed = {d.dataset.name: d.dataset.digest for d in by_stage["scrub"].inputs.dataset_inputs}
    assert scrubbed["scrubbed"] == md5["data/scrubbed/tickets.jsonl"]

    # The logged model loads and answers in the task's format fields.
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{model_id}")
    import pandas as pd

    out = model.predict(pd.DataFrame({"message": ["My card was charged twice for order ORD-12345678."]}))
    assert list(out.columns) == ["category", "priority", "reply", "well_formed", "raw"] and len(out) == 1

    # The served model answers exactly as the evaluation generated: one code path, the adapter's settings.
    from pipeline.common.generation import generation_settings
    from pipeline.common.scorer import Scorer, load_models

    adapter = project / "models" / "adapter"
    assert generation_settings(adapter) == {"max_new_tokens": TINY_FINETUNE["max_new_tokens"]}
    assert read_json(project / "reports" / "evaluation.json")["generation"] == generation_settings(adapter)
    lm, tokenizer = load_models(project / "models" / "base", adapter)
    evaluated = Scorer(lm, tokenizer, generation_settings(adapter)["max_new_tokens"]).generate(
        ["My card was charged twice for order ORD-12345678."], 8
    )
    assert out["raw"].tolist() == evaluated


@pytest.mark.slow
def test_full_fine_tune_trains_every_weight_and_every_stage_reads_it(tmp_path, tiny_built, monkeypatch):
    """``finetune.method: full`` (#20): the same data path and outputs, every weight trained;
    ``models/adapter`` holds a whole model that evaluate, the gate, the logged pyfunc model and
    ``govtune verify`` read as they read an adapter; the base figures are the LoRA run's."""
    import mlflow
    import pandas as pd

    from pipeline.common.generation import generation_settings
    from pipeline.common.io import sha256_file
    from pipeline.common.scorer import Scorer, load_models

    project = tiny_built.clone(tmp_path / "p")
    lora_eval = read_json(project / "reports" / "evaluation.json")
    lora_version = read_json(project / "reports" / "gate_decision.json")["candidate_version"]
    assert lora_version is not None
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"].update({"method": "full", "learning_rate": 0.001})
    write_yaml(project / "params.yaml", params)
    proc = run_cmd(["dvc", "repro"], cwd=project)
    assert {"finetune", "evaluate", "gate"} <= set(re.findall(r"Running stage '(\w+)'", proc.stdout)), proc.stderr[
        -3000:
    ]

    out = project / "models" / "adapter"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    assert read_json(out / "provenance.json")["method"] == "full"
    metrics = read_json(project / "reports" / "train_metrics.json")
    assert metrics["trainable_parameters"] == metrics["total_parameters"]
    assert metrics["val_loss_final"] < metrics["val_loss_base"]

    evaluation = read_json(project / "reports" / "evaluation.json")
    assert evaluation["inputs"]["adapter_sha256"] == sha256_file(out / "model.safetensors")
    for key in ("category_accuracy", "priority_accuracy"):  # the base, loaded apart, scores as with the adapter off
        assert evaluation["base"]["quality"][key]["value"] == lora_eval["base"]["quality"][key]["value"], key
    decision = read_json(project / "reports" / "gate_decision.json")
    for check in ("adapter_built_from_base", "adapter_files_intact", "evaluation_of_this_adapter"):
        assert decision["checks"][check]["value"] is True, (check, decision["checks"][check])
    assert decision["registry"]["version"] == decision["candidate_version"] != lora_version

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)

    name = params["tracking"]["registered_model"]
    assert client.get_model_version(name, decision["candidate_version"]).tags["govtune.weights_sha256"] == sha256_file(
        out / "model.safetensors"
    )
    served = mlflow.pyfunc.load_model(f"models:/{name}/{decision['candidate_version']}")
    message = "My card was charged twice for order ORD-12345678."
    answer = served.predict(pd.DataFrame({"message": [message]}))
    lm, tokenizer = load_models(project / "models" / "base", out)
    assert not hasattr(lm, "peft_config")
    assert answer["raw"].tolist() == Scorer(lm, tokenizer, generation_settings(out)["max_new_tokens"]).generate(
        [message], 8
    )
    assert run_cmd(["govtune", "verify"], cwd=project).returncode == 0


@pytest.mark.parametrize("label_weight", [1.0, 3.0])
def test_shared_prefix_loss_gives_the_plain_loss_and_gradients(tiny_model, label_weight, monkeypatch):
    """finetune.share_prefix (the shared system prompt run once, its cache repeated over the
    batch) computes the plain loss and LoRA gradients, weighted or not; a batch whose rows
    differ earlier shares less."""
    import torch
    from transformers import AutoTokenizer

    from benchmarks.finetune_variants import timed_step
    from pipeline.common.params import load_params
    from pipeline.common.shared_prefix import common_prefix, shared_prefix_loss
    from pipeline.finetune import build_model

    tok = AutoTokenizer.from_pretrained(tiny_model[0])
    records = [{"message": m, "category": c, "priority": p, "reply": r} for m, c, p, r in (
        ("My card was charged twice this month.", "billing", "high", "Refunded."),
        ("The parcel never arrived.", "shipping", "medium", "We are tracing it now."),
        ("App crashes on login after the update, every time I try.", "technical", "urgent", "Fix coming."),
    )]  # fmt: skip
    examples, _ = encode_records(tok, records, 256, count_labels=True)
    batch = collate(examples, tok.pad_token_id or 0, label_weight)
    assert ("loss_weights" in batch) == (label_weight != 1.0)
    shared = common_prefix(batch)
    assert 2 <= shared < min(len(e.input_ids) for e in examples)  # the chat template's system turn, at least
    assert bool((batch["labels"][:, :shared] == -100).all())
    cfg = load_params(REPO / "params.yaml").finetune.model_copy(update={"lora_dropout": 0.0, "lora_r": 4})
    torch.manual_seed(0)
    model = build_model(tiny_model[0], cfg, "fp32", "cpu").train()
    for p in model.parameters():  # LoRA's B starts at zero: make the adapter matter to the gradients
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    _, plain_loss, plain_grads = timed_step(model, batch, answer_loss)
    import pipeline.common.training as training

    def no_fallback(*args, **kwargs):
        raise AssertionError("the shared path fell back to the plain loss")

    monkeypatch.setattr(training, "answer_loss", no_fallback)
    _, shared_loss, shared_grads = timed_step(model, batch, shared_prefix_loss)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(plain_grads, shared_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    broken = dict(batch, input_ids=batch["input_ids"].clone())
    broken["input_ids"][1:, shared - 1] = (broken["input_ids"][0, shared - 1] + 1) % len(tok)  # rows differ earlier
    assert common_prefix(broken) == shared - 1


def test_the_stage_trains_alike_with_a_shared_prefix(tiny_model, tmp_path, monkeypatch):
    """finetune.share_prefix in the stage's loop: with dropout off, the same loss at every step
    and the same adapter (to float rounding) as the plain loop."""
    import torch

    from pipeline.common.params import load_params
    from pipeline.synthesize import generate

    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    records, _ = generate(params.synthesize.model_copy(update={"rows": 24}))
    cfg = params.finetune.model_copy(update=TINY_FINETUNE | {
        "max_steps": 3, "lora_dropout": 0.0, "checkpoint_interval": 0, "eval_interval": 100, "eval_max_examples": 2,
        "checkpoint_dir": tmp_path / "ckpt", "counterfactual_augmentation": False,
    })  # fmt: skip
    import pipeline.finetune as stage
    from pipeline.common.shared_prefix import common_prefix, shared_prefix_loss

    prefixes = []

    def counted(model, batch):
        prefixes.append(common_prefix(batch))
        return shared_prefix_loss(model, batch)

    monkeypatch.setattr(stage, "shared_prefix_loss", counted)
    runs = {}
    for shared in (False, True):
        model, _, state, _ = train(
            cfg.model_copy(update={"share_prefix": shared}), tiny_model[0], records, records[:2], "fp", Dist()
        )
        runs[shared] = ([h["train_loss"] for h in state.history], trained_weights(model))
    assert len(prefixes) == cfg.max_steps * cfg.grad_accum and min(prefixes) >= 2  # every micro-batch shared one
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    assert set(runs[True][1]) == set(runs[False][1])
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, rtol=1e-3, atol=1e-5)
