"""The reference pages (docs/reference/) are generated from the models and current with the code."""

from __future__ import annotations

import re

import yaml

from pipeline.reference import pages
from tests.conftest import REPO


def test_committed_reference_pages_are_current(monkeypatch):
    monkeypatch.chdir(REPO)
    for path, text in pages().items():
        committed = REPO / path
        assert committed.is_file(), f"run `python -m pipeline.reference` and commit {path}"
        assert committed.read_text(encoding="utf-8") == text, f"{path} is stale: run `python -m pipeline.reference`"


def leaf_keys(data: object, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in leaf_keys(value, f"{prefix}{key}.")] or [prefix.rstrip(".")]
    return [prefix.rstrip(".")]


def test_every_key_of_params_yaml_has_a_reference_row():
    text = (REPO / "docs" / "reference" / "params.md").read_text(encoding="utf-8")
    rows: set[str] = set()
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif m := re.match(r"^\| `([^`]+)` \|", line):
            rows.add(f"{section}.{m[1]}")
    keys = leaf_keys(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))
    missing = [k for k in keys if k not in rows]
    assert not missing, f"params.yaml keys without a row in docs/reference/params.md: {missing}"
    assert "finetune.max_new_tokens" in rows  # a key the walk must reach (nested models too: label_bias.strength)
    assert "synthesize.label_bias.strength" in rows


def test_every_policy_file_has_a_reference_section():
    text = (REPO / "docs" / "reference" / "policies.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "policies").glob("*.yaml")):
        assert f"## policies/{path.name}" in text, path.name
    assert "| `rules[].evidence` |" in text and "| `entities.<key>.min_score` |" in text


def test_readme_is_one_screen_and_every_doc_link_resolves():
    assert (REPO / "README.md").stat().st_size <= 6 * 1024, "README.md is the one-screen entry: move detail into docs/"
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
