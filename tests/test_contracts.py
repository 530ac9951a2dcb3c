"""Contract tests: every shipped config loads into its typed model; dvc.yaml is consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.cli import _policy_models, export_schemas, lint_policies
from pipeline.common.errors import GovtuneError
from pipeline.common.params import Params, load_params
from pipeline.common.policy import load_allowlist
from tests.conftest import REPO


def test_params_yaml_loads():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.base_model.id in {m.id for m in load_allowlist(REPO / params.base_model.allowlist).models}


def test_every_policy_file_has_a_model_and_loads():
    from pipeline.common.config import load_yaml, validate

    models = _policy_models()
    files = sorted(p.name for p in (REPO / "policies").glob("*.yaml"))
    assert files, "policies/ holds no YAML"
    assert set(files) <= set(models), f"policy files without a typed model: {set(files) - set(models)}"
    for name in files:
        data, node = load_yaml(REPO / "policies" / name)
        validate(models[name], data, name, node)


def test_committed_json_schemas_are_current(tmp_path):
    """policies/schemas/ is what `govtune policy schema` writes (regenerate after a model change)."""
    written = export_schemas(tmp_path)
    assert any(p.parent.name == "evidence" for p in written), "the evidence models' schemas are exported too"
    for path in written:
        committed = REPO / "policies" / "schemas" / path.relative_to(tmp_path)
        assert committed.is_file(), f"run `govtune policy schema` and commit {committed}"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `govtune policy schema`"


def test_json_schema_rejects_a_typo_like_the_model():
    import jsonschema

    schema = __import__("json").loads((REPO / "policies" / "schemas" / "promotion.schema.json").read_text())
    good = yaml.safe_load((REPO / "policies" / "promotion.yaml").read_text())
    jsonschema.validate(good, schema)
    bad = {**good, "rules": [{**good["rules"][0], "treshold": 1}]}
    with pytest.raises(jsonschema.ValidationError, match="treshold"):
        jsonschema.validate(bad, schema)


def test_policy_lint_passes_on_the_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    assert lint_policies(Path("params.yaml")) == []


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_dvc_stages()))
def test_dvc_stage_has_module_and_params(stage):
    spec = _dvc_stages()[stage]
    assert spec["cmd"] == f"python -m pipeline.{stage}"
    assert (REPO / "pipeline" / f"{stage}.py").is_file()
    assert f"pipeline/{stage}.py" in spec["deps"]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in spec.get("params", []):
        node = raw
        for part in key.split("."):
            assert part in node, f"dvc.yaml stage {stage} reads params key {key!r}, missing from params.yaml"
            node = node[part]
    sections = {f.alias or name for name, f in Params.model_fields.items()}
    assert stage in sections, f"stage {stage} has no params section model"


def _uncommented_keys(path: Path) -> list[str]:
    """Schema fields (key paths, list indices folded) with no comment at any occurrence.

    A key counts as commented when its line, or the line above, has a comment. Repeated
    entries of a list (rules, recognizers) need the comment once, on any entry.
    """
    lines = path.read_text().splitlines()

    def commented(line_no: int) -> bool:
        above = lines[line_no - 1].strip() if line_no else ""
        return "#" in lines[line_no] or above.startswith("#")

    seen: dict[str, bool] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                field = f"{prefix}.{key.value}" if prefix else key.value
                seen[field] = seen.get(field, False) or commented(key.start_mark.line)
                walk(value, field)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, prefix + "[]")

    walk(yaml.compose(path.read_text()), "")
    # Keys that are data, not schema (entity names, file names, columns) sit under a mapping
    # whose own key is commented; only fields of the schema are checked.
    return sorted(
        f"{path.name}: {field}" for field, ok in seen.items() if not ok and not _is_data_key(path.name, field)
    )


def _is_data_key(file: str, field: str) -> bool:
    parent = field.rsplit(".", 1)[0] if "." in field else ""
    data_maps = {
        "data_contract.yaml": ("columns",),
        "pii.yaml": ("entities", "identifier_columns"),
        "models.yaml": ("models[].files",),
        "fairness.yaml": ("counterfactual.swaps",),
    }
    return any(parent == m or parent.startswith(m + ".") for m in data_maps.get(file, ()))


@pytest.mark.parametrize(
    "path", [REPO / "params.yaml", *sorted((REPO / "policies").glob("*.yaml"))], ids=lambda p: p.name
)
def test_every_key_is_commented(path):
    assert _uncommented_keys(path) == []


# Table test: broken params files fail closed, naming file, line and key.
BAD_PARAMS = [
    ("unknown key", lambda d: d["base_model"].update(idd="x"), "base_model.idd", "unknown key"),
    ("wrong type", lambda d: d["synthesize"].update(rows="many"), "synthesize.rows", "integer"),
    (
        "out of range",
        lambda d: d["synthesize"]["label_bias"].update(strength=1.5),
        "synthesize.label_bias.strength",
        "less than or equal",
    ),
    ("bad enum", lambda d: d["base_model"].update(dtype="int3"), "base_model.dtype", "float32"),
    ("missing section", lambda d: d.pop("data"), "data", "Field required"),
]


@pytest.mark.parametrize("name,mutate,key,phrase", BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_bad_params_fail_with_file_line_and_key(tmp_path, name, mutate, key, phrase):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(data)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(GovtuneError) as info:
        load_params(bad)
    message = str(info.value)
    assert str(bad) in message and key in message and phrase in message
    assert re.search(r"line \d+", message)


def test_good_params_copy_still_loads(tmp_path):
    """The negative rows above fail because of their mutation, not because of the copy."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    good = tmp_path / "params.yaml"
    good.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_params(good) == load_params(REPO / "params.yaml")


@pytest.mark.parametrize(
    "text,phrase",
    [
        ("base_model: [unclosed\n", "invalid YAML"),
        ("", "file is empty"),
        (b"\xff\xfe bad".decode("latin-1"), "invalid"),
    ],
    ids=["syntax", "empty", "garbage"],
)
def test_unparseable_params(tmp_path, text, phrase):
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    with pytest.raises(GovtuneError, match=phrase):
        load_params(bad)


def test_policy_typo_is_rejected_with_line(tmp_path):
    text = (REPO / "policies" / "models.yaml").read_text().replace("intended_use:", "intended_usage:", 1)
    bad = tmp_path / "models.yaml"
    bad.write_text(text)
    with pytest.raises(GovtuneError) as info:
        load_allowlist(bad)
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if "intended_usage:" in row)
    assert f"line {line}: models.0.intended_usage: unknown key" in str(info.value)


def _first_line(text: str, fragment: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if fragment in line)


def _duplicate_threshold(text: str) -> str:
    """The first rule of promotion.yaml (data_contract_passed: threshold true) with a second,
    inverting `threshold:` line: YAML alone would keep the last value, `false`."""
    line = _first_line(text, "threshold: true")
    lines = text.splitlines(keepends=True)
    return "".join(lines[:line] + ["    threshold: false\n"] + lines[line:])


# Table test: one edit of a policy (or params) file's text -> the lint problem it must raise.
# (file, edit, phrases in the problem; None: the edited file still lints clean)
BAD_TEXT = [
    ("promotion.yaml", _duplicate_threshold, ["promotion.yaml:35", "duplicate key 'rules.0.threshold' (lines 34 and 35)"]),
    ("pii.yaml", lambda t: t.replace("enabled: true", "enabled: true\nenabled: false", 1), ["duplicate key 'enabled'"]),
    ("fairness.yaml", lambda t: t + "min_group_size: 5\n", ["duplicate key 'min_group_size'"]),
    ("promotion.yaml", lambda t: t.replace("threshold: 0.80 ", 'threshold: "0.80"', 1), ["threshold", "write it without quotes"]),
    ("promotion.yaml", lambda t: t.replace("fail_on_reject: true", 'fail_on_reject: "true"', 1), ["fail_on_reject", "without quotes"]),
    ("pii.yaml", lambda t: t.replace("PERSON: {min_score: 0.4", 'PERSON: {min_score: "0.4"', 1), ["entities.PERSON.min_score", "without quotes"]),
    ("params.yaml", lambda t: t.replace("tracking:", "tracking:\n  enabled: true", 1), ["params.yaml", "duplicate key 'tracking.enabled'"]),
    ("pii.yaml", lambda t: t.replace("phone_regions: [US, GB,", "phone_regions: [US, UK,", 1), ["phone_regions", "'UK'", "GB, not UK"]),
    # negative rows: the same keys once, and unquoted numbers, are fine
    ("promotion.yaml", lambda t: t.replace("threshold: 0.80 ", "threshold: 0.8  ", 1), None),
    ("fairness.yaml", lambda t: t + "# min_group_size: 5\n", None),
    ("pii.yaml", lambda t: t.replace("phone_regions: [US, GB, DE, FR, IL, IN, CA, BR]", "phone_regions: [US, GB]", 1), None),
]  # fmt: skip


@pytest.mark.parametrize("name,edit,phrases", BAD_TEXT, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_TEXT)])
def test_lint_refuses_duplicate_keys_and_quoted_numbers(tmp_path, monkeypatch, name, edit, phrases):
    import shutil

    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    target = tmp_path / ("params.yaml" if name == "params.yaml" else f"policies/{name}")
    edited = edit(target.read_text())
    assert edited != target.read_text(), "the edit did not apply"
    target.write_text(edited)
    monkeypatch.chdir(tmp_path)
    if name == "params.yaml":
        with pytest.raises(GovtuneError) as info:
            load_params(Path("params.yaml"))
        problems = [str(info.value)]
    else:
        problems = lint_policies(Path("params.yaml"))
    if phrases is None:
        assert problems == []
    else:
        assert any(all(p in problem for p in phrases) for problem in problems), problems


@pytest.mark.parametrize(
    "name,edit,phrases",
    [
        ("models.yaml", lambda t: t.replace("license:", "licence:", 1), ["models.yaml", "licence: unknown key"]),
        ("promotion.yaml", _duplicate_threshold, ["promotion.yaml:35", "(lines 34 and 35)"]),
        (
            "promotion.yaml",
            lambda t: t.replace("threshold: 0.80 ", 'threshold: "0.80"', 1),
            ["promotion.yaml", "without quotes"],
        ),
    ],
    ids=["typo", "duplicate key", "quoted number"],
)
def test_cli_lint_reports_problem_and_exits_2(tmp_path, monkeypatch, name, edit, phrases):
    from tests.conftest import copy_project, run_cmd

    project = copy_project(tmp_path / "p")
    policy = project / "policies" / name
    policy.write_text(edit(policy.read_text()))
    proc = run_cmd(["govtune", "policy", "lint"], cwd=project)
    assert proc.returncode == 2
    assert all(p in proc.stderr for p in phrases), proc.stderr
