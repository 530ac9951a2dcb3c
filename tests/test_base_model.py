"""Tests of the base_model stage: allowlist checks (fail closed) and the HF conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from benchmarks.tiny_model import allowlist_entry
from pipeline.base_model import is_governed, resolve_source_dir, run, verify_files
from pipeline.common.errors import GovtuneError
from pipeline.common.io import sha256_file
from pipeline.common.params import load_params
from pipeline.common.policy import ModelAllowlist, load_allowlist
from tests.conftest import REPO, VENV_BIN, copy_project, read_json, run_cmd, write_yaml

ALLOWLIST = REPO / "policies" / "models.yaml"
DEFAULT_ID = "smollm2-135m-instruct"


def tiny_allowlist(path: Path, files: dict[str, str]) -> ModelAllowlist:
    return ModelAllowlist.model_validate({"models": [allowlist_entry("tiny", path, files)]})


@pytest.mark.parametrize(
    "name,governed",
    [("model.safetensors", True), ("sub/pytorch_model.bin", True), ("tokenizer.json", True), ("x.gguf", True),
     ("config.json", True), ("chat_template.jinja", True), ("README.md", False), ("__init__.py", False),
     ("LICENSE", False)],
)  # fmt: skip
def test_governed_file_patterns(name, governed):
    assert is_governed(name) is governed


def test_unknown_model_id_is_refused():
    with pytest.raises(GovtuneError, match="not on the allowlist.*smollm2-135m-instruct"):
        load_allowlist(ALLOWLIST).get("gpt-unknown", ALLOWLIST)


def test_tiny_model_files_verify(tiny_model):
    path, files = tiny_model
    model = tiny_allowlist(path, files).models[0]
    assert verify_files(path, model, Path("a.yaml")) == files


@pytest.mark.parametrize("case", ["flipped_byte", "missing_file", "unlisted_weight"])
def test_tiny_model_tampering_is_refused(tmp_path, tiny_model, case):
    src, files = tiny_model
    path = tmp_path / "m"
    shutil.copytree(src, path)
    if case == "flipped_byte":
        blob = bytearray((path / "model.safetensors").read_bytes())
        blob[len(blob) // 2] ^= 0x01
        (path / "model.safetensors").write_bytes(bytes(blob))
        phrase = f"sha256 mismatch for {path / 'model.safetensors'}: expected {files['model.safetensors']}, actual "
    elif case == "missing_file":
        (path / "tokenizer.json").unlink()
        phrase = "tokenizer.json is missing"
    else:
        (path / "extra.safetensors").write_bytes(b"weights")
        phrase = "not on the allowlist: extra.safetensors"
    model = tiny_allowlist(path, files).models[0]
    with pytest.raises(GovtuneError) as info:
        verify_files(path, model, Path("policies/models.yaml"))
    assert phrase in str(info.value)
    assert "policies/models.yaml" in str(info.value)


def test_default_gguf_is_installed_and_matches_allowlist():
    model = load_allowlist(ALLOWLIST).get(DEFAULT_ID, ALLOWLIST)
    source = resolve_source_dir(model, ALLOWLIST)
    assert verify_files(source, model, ALLOWLIST) == dict(model.files)


def test_default_gguf_with_one_byte_changed_is_refused(tmp_path):
    """A copy of the real GGUF with one byte flipped, listed with the approved hash."""
    model = load_allowlist(ALLOWLIST).get(DEFAULT_ID, ALLOWLIST)
    gguf = resolve_source_dir(model, ALLOWLIST) / model.gguf_file
    copy_dir = tmp_path / "gguf"
    copy_dir.mkdir()
    blob = bytearray(gguf.read_bytes())
    blob[-1000] ^= 0xFF
    (copy_dir / model.gguf_file).write_bytes(bytes(blob))
    entry = {**model.model_dump(), "source": {"kind": "local_dir", "path": copy_dir}}
    local = ModelAllowlist.model_validate({"models": [entry]}).models[0]
    with pytest.raises(GovtuneError) as info:
        verify_files(copy_dir, local, ALLOWLIST)
    expected = model.files[model.gguf_file]
    assert f"expected {expected}, actual {sha256_file(copy_dir / model.gguf_file)}" in str(info.value)
    assert model.gguf_file in str(info.value)


def test_stage_exits_nonzero_naming_file_and_hashes_when_expected_hash_changes(tmp_path):
    """The real stage, as dvc runs it, against an allowlist whose expected sha256 was edited."""
    project = copy_project(tmp_path / "p")
    allow = project / "policies" / "models.yaml"
    data = yaml.safe_load(allow.read_text())
    gguf_name = data["models"][0]["gguf_file"]
    actual = data["models"][0]["files"][gguf_name]
    wrong = "0" * 64
    data["models"][0]["files"][gguf_name] = wrong
    write_yaml(allow, data)
    proc = run_cmd([str(VENV_BIN / "python"), "-m", "pipeline.base_model"], cwd=project)
    assert proc.returncode == 2
    assert gguf_name in proc.stderr and f"expected {wrong}, actual {actual}" in proc.stderr
    assert not (project / "models" / "base").exists()


def test_installed_version_must_match(tmp_path):
    model = load_allowlist(ALLOWLIST).get(DEFAULT_ID, ALLOWLIST)
    source = model.source.model_copy(update={"version": "9.9.9"})
    with pytest.raises(GovtuneError, match="is version 0.1.2, the allowlist approves 9.9.9"):
        resolve_source_dir(model.model_copy(update={"source": source}), ALLOWLIST)


def test_run_converts_tiny_model_deterministically(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, files = tiny_model
    model = tiny_allowlist(path, files).models[0]
    cfg = load_params(REPO / "params.yaml").base_model
    outs = []
    for name in ("a", "b"):
        c = cfg.model_copy(update={"out_dir": tmp_path / name, "id": "tiny"})
        result = run(c, model, path)
        outs.append({p.name: sha256_file(p) for p in sorted((tmp_path / name).iterdir())})
    assert outs[0] == outs[1], "same inputs must give byte-identical outputs"
    out = tmp_path / "a"
    assert {"model.safetensors", "config.json", "tokenizer.json", "provenance.json"} <= set(outs[0])
    prov = read_json(out / "provenance.json")
    assert prov["source_files_sha256"] == files == result.verified_files
    assert prov["output_files_sha256"]["model.safetensors"] == outs[0]["model.safetensors"]
    assert prov["license"] == "apache-2.0" and prov["model_id"] == "tiny"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() == prov["num_parameters"]


def test_failed_run_keeps_previous_output(tmp_path, tiny_model):
    """A stage that fails mid-way leaves the previous models/base intact."""
    path, files = tiny_model
    model = tiny_allowlist(path, files).models[0]
    cfg = load_params(REPO / "params.yaml").base_model.model_copy(update={"out_dir": tmp_path / "base", "id": "tiny"})
    run(cfg, model, path)
    before = {p.name: sha256_file(p) for p in (tmp_path / "base").iterdir()}
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    (broken / "config.json").write_text("{not json")
    bad_files = {**files, "config.json": sha256_file(broken / "config.json")}
    with pytest.raises((OSError, ValueError)):  # transformers cannot parse the config
        run(cfg, tiny_allowlist(broken, bad_files).models[0], broken)
    assert {p.name: sha256_file(p) for p in (tmp_path / "base").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "broken"], "temporary output left behind"


@pytest.mark.slow
def test_real_base_model_converts_and_answers(tmp_path):
    """The default SmolLM2 GGUF converts to HF and still knows its facts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    allowlist = load_allowlist(ALLOWLIST)
    model = allowlist.get(DEFAULT_ID, ALLOWLIST)
    cfg = load_params(REPO / "params.yaml").base_model.model_copy(update={"out_dir": tmp_path / "base"})
    run(cfg, model, resolve_source_dir(model, ALLOWLIST))
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = lm.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)
